"""Great Expectations in a worker process, for the gates of a `daily-refresh`.

Importing Great Expectations takes 4 to 6 seconds of one core. A refresh starts `GateWorker` with
the run: the import then happens in another process, on the other core, while the run loads its
data and parses the dbt project, instead of taking turns with them for the interpreter; and each
gate's Data Docs render there while the next build runs. The gate reads its frames in the run's
process (the one process that may open the warehouse while the run writes it) and sends them;
the worker validates them into the run's GE context (`expectations.validation`) and answers with
the suite's outcome. A worker that stopped (crashed, or could not import) fails the gate asking it,
naming its log.

Protocol (pickles over the worker's stdin and a private copy of its stdout, answered in order):
("validate", suite name, frames, scope, settings) -> ("outcome", SuiteOutcome);
("docs",) -> ("docs", None or the error); any request can be answered ("error", text).
Requests are sent without waiting for the answers before them (`submit`): the gate reads the next
suite's frames while the worker validates, and a run can go on while a gate's suites validate. One
thread writes the requests and another reads the answers: the worker takes a suite's frames off
the pipe only when done with the suite before, and the run must not wait on that full pipe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import IO, Any

from expectations.gates import Frames, GateSettings, SuiteAnswer, SuiteOutcome
from expectations.suites import SuiteSpec, suite_named
from quantwarehouse.paths import REPO_ROOT

log = logging.getLogger(__name__)

WORKER_LOG = "gate_worker.log"
STOP_WAIT_SECONDS = 5


class GateWorkerError(RuntimeError):
    """The worker failed a request or stopped."""


class _Answer:
    """The worker's answer to one `validate` request, waited for when asked."""

    def __init__(self, worker: GateWorker, number: int) -> None:
        self._worker = worker
        self._number = number
        self.ready_at = 0.0

    def outcome(self) -> SuiteOutcome:
        _, payload, self.ready_at = self._worker._answer(self._number)
        return payload


class GateWorker:
    """A `expectations.gates.Validator` in a worker process; `close()` when the run ends."""

    def __init__(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = run_dir / WORKER_LOG
        with self.log_path.open("ab") as worker_log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "expectations.worker", str(run_dir)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=worker_log,
                cwd=REPO_ROOT,
            )
        self._sent = 0  # requests sent, numbered from 0; answers come in the same order
        self._sending = threading.Lock()
        self._received = 0
        self._arrived: dict[int, tuple[str, Any, float]] = {}
        self._docs: list[int] = []
        # (kind, payload, perf_counter when read), then None once the worker's stdout closes
        self._answers: queue.Queue[tuple[str, Any, float] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read_answers, name="gate-answers", daemon=True)
        self._reader.start()
        self._requests: queue.Queue[tuple[Any, ...] | None] = queue.Queue()  # None: no more
        self._writer = threading.Thread(
            target=self._write_requests, name="gate-requests", daemon=True
        )
        self._writer.start()

    @property
    def pid(self) -> int:
        """The worker process's id."""
        return self._process.pid

    def submit(
        self, spec: SuiteSpec, frames: Frames, scope: str, settings: GateSettings
    ) -> SuiteAnswer:
        return _Answer(self, self._send(("validate", spec.name, list(frames()), scope, settings)))

    def validate(
        self, spec: SuiteSpec, frames: Frames, scope: str, settings: GateSettings
    ) -> SuiteOutcome:
        return self.submit(spec, frames, scope, settings).outcome()

    def build_docs(self) -> None:
        """Ask for the Data Docs of the results so far; the run goes on while they render."""
        self._docs.append(self._send(("docs",)))

    def close(self) -> None:
        """Wait for the Data Docs asked for, then stop the worker."""
        try:
            for number in self._docs:
                self._answer(number)
        finally:
            self._requests.put(None)  # the writer then closes the worker's stdin: it exits
            self._writer.join()
            self._process.wait()
            self._reader.join()

    def _send(self, request: tuple[Any, ...]) -> int:
        """Queue `request` for the worker; its number, by which `_answer` finds its answer.
        Gates may send from several threads (a gate reading its frames in the background)."""
        with self._sending:
            self._requests.put(request)
            self._sent += 1
            return self._sent - 1

    def _write_requests(self) -> None:
        assert self._process.stdin is not None
        try:
            while (request := self._requests.get()) is not None:
                pickle.dump(request, self._process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                self._process.stdin.flush()
        except OSError:
            pass  # it stopped (a broken pipe): the requests still unanswered fail when waited for
        finally:
            with contextlib.suppress(OSError):
                self._process.stdin.close()

    def _read_answers(self) -> None:
        assert self._process.stdout is not None
        try:
            while True:
                kind, payload = pickle.load(self._process.stdout)
                self._answers.put((kind, payload, time.perf_counter()))
        except (EOFError, OSError, pickle.UnpicklingError):
            pass  # it stopped: the requests still unanswered fail when waited for
        finally:
            self._answers.put(None)

    def _answer(self, number: int) -> tuple[str, Any, float]:
        """The answer to request `number` (waits for it); a Data Docs one is logged when it
        carries an error."""
        while number not in self._arrived:
            answer = self._answers.get()
            if answer is None:
                self._answers.put(None)  # for whoever waits next
                raise self._stopped()
            self._arrived[self._received] = answer
            self._received += 1
        kind, payload, ready_at = self._arrived.pop(number)
        if kind == "error":
            raise GateWorkerError(f"the gate worker failed: {payload} (log: {self.log_path})")
        if kind == "docs" and payload is not None:
            log.error("  data docs not rendered: %s (log: %s)", payload, self.log_path)
        return kind, payload, ready_at

    def _stopped(self) -> GateWorkerError:
        try:  # its pipes closed: it is exiting, if not gone already
            code: int | None = self._process.wait(timeout=STOP_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            code = None
        return GateWorkerError(f"the gate worker stopped (exit status {code}); see {self.log_path}")


def _answer_request(validation: Any, request: tuple[Any, ...]) -> tuple[str, Any]:
    if request[0] == "validate":
        _, name, frames, scope, settings = request
        return "outcome", validation.validate(suite_named(name), lambda: frames, scope, settings)
    if request[0] == "docs":
        try:
            validation.build_docs()
        except Exception as exc:  # the docs are a report: the gates' verdicts stand without them
            log.exception("data docs")
            return "docs", f"{type(exc).__name__}: {exc}"
        return "docs", None
    raise ValueError(f"unknown request {request[0]!r}")


def serve(run_dir: Path, requests: IO[bytes], answers: IO[bytes]) -> None:
    """Answer requests until the run closes the worker's stdin."""
    from expectations.validation import SuiteValidation  # the seconds-long import, done first

    validation = SuiteValidation(run_dir)
    while True:
        try:
            request = pickle.load(requests)
        except EOFError:
            return
        try:
            answer = _answer_request(validation, request)
        except Exception as exc:
            log.exception("request %s", request[0])
            answer = ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
        pickle.dump(answer, answers, protocol=pickle.HIGHEST_PROTOCOL)
        answers.flush()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # a line per config write
    # Answers go to a private copy of stdout; whatever a library prints goes to the log instead.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(Path(sys.argv[1]), sys.stdin.buffer, answers)


if __name__ == "__main__":
    main()
