"""Great Expectations quality gates, one set of suites per layer of the warehouse.

Stable API (`expectations.gates`): `run_gate(con, layer, *, slice=None, run_dir, settings=None)`
returns a `GateResult` (`passed`, `failures`, `failed_expectations`, `suites`, `data_docs`,
`lines()`); `Slice` picks the part of a layer a refresh changed; `GateSettings` holds the
thresholds; `run_directory(run_id)` is `data/runs/<run_id>/`; `GateSession(run_dir)` runs
several gates (`run`) through one GE context and renders their Data Docs once (`build_docs`),
in this process or, given `validator=GateWorker(run_dir)` (`expectations.worker`), in a worker
process. Layers, in pipeline order: `expectations.suites.LAYER_ORDER`. Importing this package,
`expectations.gates` or `expectations.worker` does not import Great Expectations
(`expectations.validation` and `expectations.workspace` do).
"""
