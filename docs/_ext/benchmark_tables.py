"""Sphinx directive that renders benchmark results from their JSON files.

The benchmark scripts in ``benchmarks/`` write JSON; this turns it into tables
at build time, so the documentation never holds a number typed by hand and
follows the results whenever they are re-run::

    .. benchmark-table:: results.json
       :table: overview-real

The argument is a file in ``benchmarks/results/``. Each ``:table:`` is one
function of :data:`TABLES`. A change to a JSON file rebuilds the page.
"""

import functools
import importlib.util
import json
import sys
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"


@functools.cache
def _script(name):
    """``benchmarks/<name>.py``, for its labels and its own table renderers.

    Loaded from its file (benchmarks are scripts, not a package), so that
    this page shows the results exactly as the script prints them.
    """
    # Scripts import their siblings by bare name, as when run from benchmarks/.
    if str(REPO / "benchmarks") not in sys.path:
        sys.path.append(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location(f"_skmtl_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_all():
    return _script("run_all")


def _markdown_table(lines):
    """A Markdown pipe table (as the scripts print it) as an rst list-table."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in lines if line.strip().startswith("|")]
    rows = [r for r in rows if not all(set(c) <= set("-: ") for c in r)]
    return _list_table(rows[0], rows[1:])


def _markdown_sections(lines, level=2):
    """``## heading`` (``level`` hashes) -> the lines under it."""
    prefix = "#" * level + " "
    sections, current = {}, None
    for line in lines:
        if line.startswith(prefix):
            current = sections.setdefault(line[len(prefix):].strip(), [])
        elif current is not None:
            current.append(line)
    return sections


def _list_table(header, rows, *, widths=None, title=None):
    lines = [f".. list-table:: {title or ''}".rstrip(), "   :header-rows: 1"]
    if widths:
        lines.append(f"   :widths: {' '.join(map(str, widths))}")
    lines.append("")
    for row in [header, *rows]:
        first, *rest = [str(c) if str(c) else " " for c in row]
        lines.append(f"   * - {first}")
        lines += [f"     - {c}" for c in rest]
    return lines + [""]


def run_info(results, ra):
    """One paragraph: when, where and how the run was made."""
    m, v, a = results["machine"], results["versions"], results["args"]
    return [
        f"Run of {results['date']} on {m['cpu_count']} cores (load average "
        f"{m['load_average_at_start'][0]:.1f} at the start), Python {m['python']}, "
        f"numpy {v['numpy']}, scipy {v['scipy']}, scikit-learn {v['sklearn']}, "
        f"statsmodels {v.get('statsmodels', 'n/a')}, skmtl {v['skmtl']}; "
        f"{a.get('splits', 'n/a')} splits{' (--quick)' if a.get('quick') else ''}"
        + (f"; wall time {results['wall_time_s'] / 60:.1f} min" if "wall_time_s" in results else "")
        + ".",
        "",
    ]


def overview_real(results, ra):
    """Models by real data set: explained variance, best skmtl model in bold."""
    return _markdown_table(_markdown_sections(ra.overview(results))["Real data: explained variance"])


def overview_synthetic(results, ra):
    """Models by synthetic structure: explained variance."""
    return _markdown_table(_markdown_sections(ra.overview(results))["Synthetic data: explained variance"])


def fit_times(results, ra):
    """Per real data set and model: median fit time, and with the tuning."""
    keys = [k for k in results["datasets"] if not k.startswith("synthetic_")]
    rows = []
    for name, label in ra.LABELS.items():
        cells = []
        for key in keys:
            s = results["datasets"][key]["summary"].get(name)
            if s is None:
                cells.append("n/a")
            elif not s["n_splits"]:
                cells.append("killed")
            elif s["total_s"] > s["fit_s"]:
                cells.append(f"{ra._t(s['fit_s'])} ({ra._t(s['total_s'])})")
            else:
                cells.append(ra._t(s["fit_s"]))
        if any(c != "n/a" for c in cells):
            rows.append([label, *cells])
    return _list_table(["model", *keys], rows, widths=[4] + [2] * len(keys))


def targets(results, ra):
    """Per real data set: the best skmtl model and how it stands against each peer."""
    rows = []
    for key, res in results["datasets"].items():
        tg = res.get("targets")
        if not tg:
            continue
        for name, p in tg["peers"].items():
            rows.append([key, ra.LABELS[tg["best_skmtl"]], ra.LABELS[name], f"{p['difference']:+.4f}",
                         f"{p['one_std']:.4f}", p["verdict"], f"{p['splits_ahead']}/{p['splits']}"])
    return _list_table(["data", "best skmtl", "peer", "difference", "one std", "verdict",
                        "splits ahead"], rows)


def auto_vs_mixedlm(results, ra):
    """``alpha_task='auto'`` against MixedLM: explained variance and time ratio."""
    rows = []
    for key, res in results["datasets"].items():
        a = res.get("targets", {}).get("auto_vs_mixedlm")
        if not a:
            continue
        if a.get("mixedlm_killed"):
            rows.append([key, "", "killed", "", "", "", ""])
            continue
        rows.append([key, f"{a['auto_ev']:.4f}", f"{a['mixedlm_ev']:.4f}", f"{a['difference']:+.4f}",
                     "met" if a["accuracy_met"] else "missed", f"{a['time_ratio']:.1f}x",
                     "met" if a["speed_met"] else "missed"])
    tie, speed = results["protocol"]["tie_auto_vs_mixedlm"], results["protocol"]["speed_target"]
    return _list_table(["data", "'auto'", "MixedLM", "difference", f"within {tie:g}",
                        "MixedLM time / 'auto' time", f"{speed:g}x"], rows)


def grids(results, ra):
    """The hyperparameter grids of the tuned models."""
    return [f"- {ra.LABELS[name]}: " + "; ".join(f"``{k}`` in {v}" for k, v in grid.items())
            for name, grid in results["protocol"]["grids"].items()] + [""]


def _synthetic_rows(results):
    rows = []
    for r in results["synthetic"]:
        med = r["median_s"]
        rows.append([f"{r['n_tasks']} x {r['rows_per_task']}, d={r['n_features']}, {r['order']}",
                     f"{r['n_rows']:,}", *(f"{1e3 * med[k]:,.1f} ms" for k in
                                           ("skmtl", "ridge_pooled", "ridge_per_task", "skmtl_n_jobs2")),
                     f"{r['ratio_vs_ridge_pooled']:.2f}", f"{r['ratio_vs_ridge_per_task']:.3f}"])
    return rows


def shared_param_synthetic(results, ra):
    """bench_shared_param: fit time of the exact solve against Ridge."""
    info = [f"Run of {results['date']} at commit ``{results['git_commit'][:7]}``, "
            f"{results['repeats']} repeats, {results['pinned']}.", ""]
    return info + _list_table(
        ["tasks x rows", "rows", "skmtl", "Ridge pooled", "Ridge per task", "skmtl n_jobs=2",
         "skmtl / pooled", "skmtl / per task"], _synthetic_rows(results))


def shared_param_school(results, ra):
    """bench_shared_param: School, the exact solve against MixedLM."""
    s = results["school"]
    rows = [["skmtl SharedParamRegressor(alpha_task=1)", f"{1e3 * s['median_s']['skmtl']:.1f} ms", "",
             "exact solve"]]
    for key, m in s["mixedlm"].items():
        ratio = s["ratios_mixedlm_over_skmtl"][key]
        rows.append([f"MixedLM REML, {key.replace('_', ' ')} ({m['n_random_effects']} random effects)",
                     f"{m['fit_time_s']:.3g} s", f"{'> ' if ratio['lower_bound'] else ''}{ratio['ratio']:,.0f}",
                     f"{m['converged']} ({m['convergence_warnings']} convergence warnings)"])
    return _list_table(["contender", "fit time", "MixedLM / skmtl", "converged"], rows)


def shared_param_auto(results, ra):
    """bench_shared_param_auto: every contender per data set, and the targets."""
    script = _script("bench_shared_param_auto")
    lines = []
    for key, res in results["datasets"].items():
        lines += [f"**{key}** ({res['n_rows']:,} rows, {res['n_tasks']} tasks, "
                  f"{len(res['features'])} features)", ""]
        lines += _markdown_table(script.table(res, results["args"]["mixedlm_timeout"]).splitlines())
        lines += script.target_lines(res).splitlines() + [""]
    return lines


def _scaling_section(heading):
    def render(results, ra):
        sections = _markdown_sections(_script("bench_scaling").table(results).splitlines(), level=3)
        if heading not in sections:
            return ["This run has no such part.", ""]
        return _markdown_table(sections[heading])

    render.__doc__ = f"bench_scaling: the table under ``### {heading}``."
    return render


def scaling_info(results, ra):
    """bench_scaling: when, where and how the run was made."""
    m, v = results["machine"], results["versions"]
    repeats = f"{results['args']['repeats']} repeats"
    njobs = [len(r["n_jobs_1"]["runs"]) for nj in results.get("njobs", [])
             for r in nj["estimators"].values()]
    if njobs:
        repeats += f" ({max(njobs)} in the n_jobs part)"
    load = f"{m['load_average_at_start'][0]:.1f} at the start"
    if "load_average_at_end" in results:
        load += f", {results['load_average_at_end'][0]:.1f} at the end"
    return [
        f"Run of {results['date'][:16].replace('T', ' ')} UTC at commit "
        f"``{results['git_commit'][:7]}`` on {m['cpu_count']} cores (load average {load}), "
        f"Python {m['python']}, numpy {v['numpy']}, scipy {v['scipy']}, scikit-learn "
        f"{v['sklearn']}; {repeats}"
        f"{' (--quick)' if results['args'].get('quick') else ''}; {results['pinned']}; "
        f"wall time {results['wall_time_s'] / 60:.1f} min.",
        "",
    ]


def _mb(n_bytes):
    return f"{n_bytes / 1e6:,.0f} MB" if n_bytes >= 1e7 else f"{n_bytes / 1e6:.1f} MB"


def sufficient_stats(results, ra):
    """bench_sufficient_stats: the dask fit of the whole frame against the in-memory fit of a sample."""
    d, v = results["data"], results["versions"]
    info = [
        f"Run of {results['date'][:16].replace('T', ' ')} UTC at commit ``{results['commit']}`` "
        f"on {results['cpu_count']} cores (load average {results['load_average_at_start'][0]:.1f} "
        f"at the start), dask {v['dask']}, numpy {v['numpy']}, pandas {v['pandas']}, "
        f"``{results['cluster']}``, BLAS at {results['blas_threads']} thread. Data: "
        f"{d['rows']:,} rows in {d['partitions']} partitions of {d['rows_per_partition']:,}, "
        f"{d['features']} features, {d['tasks']:,} tasks, {d['bytes'] / 1e9:.2f} GB; sample: "
        f"the first {results['sample_rows']:,} rows ({_mb(results['sample_bytes'])}). Times "
        f"are medians of {results['repeat']} fits; peaks are the largest over those fits.",
        "",
    ]
    full, sample = f"{d['rows']:,} rows", f"{results['sample_rows']:,} rows"
    rows = []
    for name, e in results["results"].items():
        f, s, m = e["dask_full"], e["dask_sample"], e["in_memory_sample"]
        extra = []
        if f.get("n_iter", 1) > 1 and "n_selected_features" not in f:
            extra.append(f"{f['n_iter']} iterations")
        if "n_selected_features" in f:
            extra.append(f"{f['n_selected_features']} of {d['features']} features kept")
        rows.append([
            f"``{name}``",
            f"{f['median_seconds']:.1f} s" + (f" ({'; '.join(extra)})" if extra else ""),
            f"+{_mb(f['client_peak_rss_growth_bytes'])}",
            f"{_mb(f['worker_peak_rss_bytes'])} ({_mb(f['worker_start_rss_bytes'])})",
            f"{s['median_seconds']:.2f} s", f"{m['median_seconds']:.2f} s",
            f"+{_mb(m['client_peak_rss_growth_bytes'])}",
            f"{e['sample_max_relative_difference']:.1e}",
        ])
    return info + _list_table(
        ["estimator", f"{full} on dask: fit", "client peak", "worker peak (at start)",
         f"{sample}: dask fit", f"{sample}: in-memory fit", "in-memory peak",
         "max rel. difference"], rows)


def shared_objective(results, ra):
    """bench_shared_objective: every contender per data set, as the script prints it."""
    a = results["args"]
    loads = ", ".join(f"{key} {res['load_average_before'][0]:.1f} to "
                      f"{res['load_average_after'][0]:.1f}"
                      for key, res in results["datasets"].items())
    lines = [
        f"{a['repeats']} repeats, BLAS and torch at {results['threads']} thread, "
        f"{results['torch']}; hidden size {a['hidden']}, activation ``{a['activation']}``; "
        f"early stopping on {float(a['validation_fraction']):.0%} of the training rows "
        f"with a count of {a['patience']}; 1-minute load average {loads}.",
        "",
    ]
    rows = []
    for key, res in results["datasets"].items():
        for label, r in res["contenders"].items():
            note = "" if r.get("reached", True) else " (not reached: best epoch)"
            rows.append([key, label, f"{r['alpha']:g}",
                         f"{r['score_median']:.4f}", f"{r['fit_time_median']:.3f} s{note}",
                         f"{r['fit_time_ratio_vs_skmtl']:.2f}",
                         f"{r['fit_time_ratio_vs_reference']:.2f} ({r['reference']})"])
    return lines + _list_table(["data", "contender", "alpha", "test R^2", "fit time",
                                "time / skmtl", "time / reference"], rows)


def huber_solvers(results, ra):
    """bench_huber_solvers: Newton's method against L-BFGS, as the script prints it."""
    v = results["versions"]
    info = [
        f"Run of {results['date'][:16].replace('T', ' ')} UTC at commit "
        f"``{results['git_commit'][:7]}`` on {results['machine']['cpu_count']} cores (load "
        f"average {results['machine']['load_average_at_start'][0]:.1f} at the start), numpy "
        f"{v['numpy']}, scipy {v['scipy']}; medians of {results['repeats']} fits; "
        f"{results['pinned']}; ``epsilon={results['epsilon']}``.",
        "",
    ]
    return info + _markdown_table(_script("bench_huber_solvers").table(results["rows"]).splitlines())


TABLES = {
    "run-info": run_info,
    "overview-real": overview_real,
    "overview-synthetic": overview_synthetic,
    "fit-times": fit_times,
    "targets": targets,
    "auto-vs-mixedlm": auto_vs_mixedlm,
    "grids": grids,
    "shared-param-synthetic": shared_param_synthetic,
    "shared-param-school": shared_param_school,
    "shared-param-auto": shared_param_auto,
    "scaling-info": scaling_info,
    "scaling-rows": _scaling_section("Fit time against rows"),
    "scaling-tasks": _scaling_section("Fit time against tasks"),
    "scaling-njobs": _scaling_section("n_jobs=2 against n_jobs=1"),
    "sufficient-stats": sufficient_stats,
    "shared-objective": shared_objective,
    "huber-solvers": huber_solvers,
}


class BenchmarkTable(SphinxDirective):
    """``.. benchmark-table:: FILE.json`` with ``:table: NAME``."""

    required_arguments = 1
    option_spec = {"table": lambda arg: directives.choice(arg, list(TABLES))}

    def run(self):
        path = RESULTS / self.arguments[0]
        # The tables change with the results, with this file and with the
        # scripts' own renderers.
        for dependency in [path, Path(__file__), *sorted((REPO / "benchmarks").glob("*.py"))]:
            self.env.note_dependency(str(dependency))
        results = json.loads(path.read_text())
        lines = TABLES[self.options["table"]](results, _run_all())
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source=str(path)), self.content_offset, container)
        return container.children


def setup(app):
    app.add_directive("benchmark-table", BenchmarkTable)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
