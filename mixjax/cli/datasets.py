"""``mixjax datasets``: list the bundled datasets."""

from __future__ import annotations

from ._common import format_table, print_json


def add_parser(sub) -> None:
    p = sub.add_parser("datasets", help="list the bundled datasets", description="List the bundled datasets (sources in mixjax/datasets/README.md).")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    from mixjax.data import list_datasets, load_dataset

    rows = []
    for name, desc in list_datasets().items():
        d = load_dataset(name)
        rows.append({"name": name, "rows": d.n_rows, "domains": d.n_domains, "targets": d.n_targets, "scales": len(d.scales()), "description": desc})
    if args.json:
        print_json({"datasets": rows})
    else:
        print(format_table([[r["name"], r["rows"], r["domains"], r["targets"], r["scales"], r["description"]] for r in rows], ["name", "rows", "domains", "targets", "scales", "description"]))
    return 0
