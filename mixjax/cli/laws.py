"""``mixjax laws``: list the available laws with their parameter counts."""

from __future__ import annotations

from ._common import CliError, format_table, print_json


def add_parser(sub) -> None:
    p = sub.add_parser("laws", help="list the available laws", description="List the laws with their number of free parameters for K domains.")
    p.add_argument("--domains", "-K", type=int, default=7, help="number of training domains K for the parameter counts (default 7)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(run=run)


def law_n_params(cls, K: int) -> int:
    """Free parameters of ``cls`` for K domains (and K targets), counted on a random instance."""
    import jax
    import numpy as np

    from mixjax.laws import DataSummary, n_params

    s = DataSummary(n_domains=K, n_targets=K, loss_min=np.full(K, 2.0), loss_max=np.full(K, 4.0), loss_mean=np.full(K, 3.0),
                    model_size_ref=100.0, n_tokens_ref=10.0, model_size_range=(100.0, 1000.0), n_tokens_range=(1.0, 100.0))
    return n_params(cls.init(jax.random.PRNGKey(0), s))


def run(args) -> int:
    from mixjax.laws import LAWS

    if not 1 <= args.domains <= 10000:
        raise CliError(f"--domains must be between 1 and 10000, got {args.domains}")

    rows = [{"name": n, "n_params": law_n_params(c, args.domains), "per_domain": c.per_domain, "uses_model_size": c.uses_model_size,
             "uses_tokens": c.uses_tokens, "reference": c.reference} for n, c in LAWS.items()]
    if args.json:
        print_json({"domains": args.domains, "laws": rows})
    else:
        print(format_table([[r["name"], r["n_params"], "yes" if r["uses_model_size"] else "no", "yes" if r["uses_tokens"] else "no", r["reference"]] for r in rows],
                           ["law", f"params (K={args.domains})", "uses N", "uses D", "reference"]))
    return 0
