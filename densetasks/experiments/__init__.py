"""Experiments: what is done with finished runs — reports with Δm, and sweeps over configs.

Nothing here builds or steps a model itself: reports read run directories
(:mod:`~densetasks.experiments.run_record`; a row may be several seeds of one config,
:mod:`~densetasks.experiments.report_seeds`), sweeps plan configs and hand training to
:func:`densetasks.engine.train`. Plots are drawn on matplotlib's Agg canvas without ``pyplot``,
so importing this package leaves the user's matplotlib backend alone.

``sweep`` never imports ``sweep_plots``; pass :func:`sweep_figure_png` to :func:`write_sweep`
for ``sweep.png``.
"""

from densetasks.experiments.report import (
    build_report,
    format_markdown_table,
    format_text_table,
    load_group,
    load_records,
    write_report,
)
from densetasks.experiments.report_seeds import SeedGroup, seed_group
from densetasks.experiments.run_record import RunRecord, load_run_record
from densetasks.experiments.sweep import (
    PlannedRun,
    SweepEntry,
    SweepResult,
    collect_results,
    expand_grid,
    format_sweep_table,
    pareto_front,
    parse_grid,
    plan_grid,
    plan_runs,
    run_sweep,
    write_sweep,
)
from densetasks.experiments.sweep_plots import sweep_figure_png

__all__ = [
    "PlannedRun",
    "RunRecord",
    "SeedGroup",
    "SweepEntry",
    "SweepResult",
    "build_report",
    "collect_results",
    "expand_grid",
    "format_markdown_table",
    "format_sweep_table",
    "format_text_table",
    "load_group",
    "load_records",
    "load_run_record",
    "pareto_front",
    "parse_grid",
    "plan_grid",
    "plan_runs",
    "run_sweep",
    "seed_group",
    "sweep_figure_png",
    "write_report",
    "write_sweep",
]
