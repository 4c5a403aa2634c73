"""The load generator: N processes, each with its own gRPC channels and threads, closed loop
at a fixed concurrency (or paced at a fixed rate), bounded by a request count and a time.

Requests are built before the clock starts; a thread's loop is one blocking call, a
perf_counter pair and a list append. Each process reports its counts, latencies and CPU.
"""

from __future__ import annotations

import multiprocessing
import random
import resource
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from coalition.bench.setup import BURN_POINTS_MAX, CURRENCIES, PARTNER_COUNT, member_id, partner_id
from coalition.client import NO_RETRY, HubClient, HubError
from coalition.v1 import common_pb2, points_service_pb2

EARN_SPEND_MINOR = 1000  # 10 points at the bench partners' rate
CALL_TIMEOUT_SECONDS = 30.0
READY_SECONDS_MAX = 120.0  # for every process to build its channels and requests
WORKLOADS = ("earn", "burn", "mix", "batch_earn")


@dataclass(frozen=True)
class LoadSpec:
    workload: str
    targets: tuple[str, ...]  # host:port; threads are spread over them
    api_keys: dict[str, str]
    members: int
    requests: int  # total over every process
    duration_seconds_max: float
    processes: int
    threads_per_process: int
    batch_size: int = 1000
    rate_per_second: float | None = None  # paced (open loop) instead of closed loop
    run_tag: str = "run"


@dataclass
class LoadResult:
    requests: int = 0
    ok: int = 0
    operations: int = 0  # earns applied (a batch counts its items), burns, reversals
    errors: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0
    duration_seconds: float = 0.0


def run_load(spec: LoadSpec) -> LoadResult:
    """Run the load in `spec.processes` spawned processes; merge what they report."""
    context = multiprocessing.get_context("spawn")
    queue: Any = context.Queue()
    # The processes start their clocks together, once every one is ready (not after a fixed
    # delay, which is idle time when they are quick and too short when the machine is busy).
    ready: Any = context.Barrier(spec.processes)
    processes = [
        context.Process(target=_process_main, args=(spec, index, ready, queue))
        for index in range(spec.processes)
    ]
    for process in processes:
        process.start()
    reports = [queue.get(timeout=spec.duration_seconds_max + 120) for _ in processes]
    for process in processes:
        process.join()
    total = LoadResult()
    for report in reports:
        if "failure" in report:
            raise RuntimeError(f"load generator process failed: {report['failure']}")
        total.requests += report["requests"]
        total.ok += report["ok"]
        total.operations += report["operations"]
        total.errors.update(report["errors"])
        total.by_kind.update(report["by_kind"])
        total.latencies_ms.extend(report["latencies_ms"])
        total.cpu_seconds += report["cpu_seconds"]
        total.duration_seconds = max(total.duration_seconds, report["duration_seconds"])
    return total


def _process_main(spec: LoadSpec, index: int, ready: Any, queue: Any) -> None:
    try:
        queue.put(_Generator(spec, index).run(ready))
    except BaseException as error:  # report, so the parent does not wait forever
        queue.put({"failure": repr(error)})


class _Generator:
    def __init__(self, spec: LoadSpec, index: int) -> None:
        self.spec = spec
        self.index = index
        self.random = random.Random(f"{spec.run_tag}-{index}")
        threads = spec.threads_per_process
        per_process = spec.requests // spec.processes + (index < spec.requests % spec.processes)
        self.per_thread = [
            per_process // threads + (t < per_process % threads) for t in range(threads)
        ]
        self.lock = threading.Lock()
        self.result = LoadResult()

    def run(self, ready: Any) -> dict[str, Any]:
        threads = []
        for number in range(self.spec.threads_per_process):
            target = self.spec.targets[(self.index + number) % len(self.spec.targets)]
            # A channel of its own per thread (a local subchannel pool: its own connection),
            # so that SO_REUSEPORT spreads the connections over the hub's workers.
            channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
            grpc.channel_ready_future(channel).result(timeout=30)
            # Each call is measured as the hub answered it: a retry would hide a failure.
            clients = {
                partner: HubClient(channel, key, CALL_TIMEOUT_SECONDS, NO_RETRY)
                for partner, key in self.spec.api_keys.items()
            }
            work = self._prebuilt(number, self.per_thread[number])
            threads.append(threading.Thread(target=self._loop, args=(clients, work, number)))
        ready.wait(timeout=READY_SECONDS_MAX)  # broken (an error) if another process failed
        cpu_before = _cpu_seconds()
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.result.duration_seconds = time.perf_counter() - started
        self.result.cpu_seconds = _cpu_seconds() - cpu_before
        return {
            "requests": self.result.requests,
            "ok": self.result.ok,
            "operations": self.result.operations,
            "errors": dict(self.result.errors),
            "by_kind": dict(self.result.by_kind),
            "latencies_ms": self.result.latencies_ms,
            "cpu_seconds": self.result.cpu_seconds,
            "duration_seconds": self.result.duration_seconds,
        }

    def _prebuilt(self, thread_number: int, count: int) -> list[tuple[str, str, Any]]:
        """(kind, partner, request) for every call of the thread; reversals are filled in
        while running (they name a burn this thread made)."""
        work: list[tuple[str, str, Any]] = []
        for sequence in range(count):
            number = self.random.randint(1, PARTNER_COUNT)
            request_id = f"{self.spec.run_tag}-{self.index}-{thread_number}-{sequence}"
            kind = self._kind()
            if kind == "earn":
                request: Any = self._earn(request_id, number)
            elif kind == "burn":
                request = points_service_pb2.BurnRequest(
                    request_id=request_id,
                    member=self._member(),
                    points=self.random.randint(1, BURN_POINTS_MAX),
                )
            elif kind == "reverse":
                request = points_service_pb2.ReverseRequest(request_id=request_id, reason="bench")
            else:
                request = points_service_pb2.BatchEarnRequest(
                    items=[
                        self._earn(f"{request_id}-{item}", number)
                        for item in range(self.spec.batch_size)
                    ],
                    mode=points_service_pb2.BATCH_EARN_MODE_PER_ITEM,
                )
            work.append((kind, partner_id(number), request))
        return work

    def _kind(self) -> str:
        if self.spec.workload == "earn":
            return "earn"
        if self.spec.workload == "batch_earn":
            return "batch_earn"
        if self.spec.workload == "burn":
            return "burn"
        draw = self.random.random()
        return "earn" if draw < 0.80 else "burn" if draw < 0.95 else "reverse"

    def _member(self) -> common_pb2.MemberReference:
        return common_pb2.MemberReference(
            member_id=member_id(self.random.randint(1, self.spec.members))
        )

    def _earn(self, request_id: str, number: int) -> points_service_pb2.EarnRequest:
        return points_service_pb2.EarnRequest(
            request_id=request_id,
            member=self._member(),
            spend=common_pb2.Money(amount_minor=EARN_SPEND_MINOR, currency=CURRENCIES[number - 1]),
        )

    def _loop(
        self,
        clients: dict[str, HubClient],
        work: list[tuple[str, str, Any]],
        thread_number: int,
    ) -> None:
        calls: dict[str, dict[str, Callable[[Any], Any]]] = {
            partner: {
                "earn": client.earn,
                "burn": client.burn,
                "reverse": client.reverse,
                "batch_earn": client.batch_earn,
            }
            for partner, client in clients.items()
        }
        interval = (
            self.spec.processes * self.spec.threads_per_process / self.spec.rate_per_second
            if self.spec.rate_per_second
            else 0.0
        )
        burns: dict[str, deque[str]] = {partner_id(n): deque() for n in range(1, 5)}
        deadline = time.perf_counter() + self.spec.duration_seconds_max
        next_send = time.perf_counter() + self.random.random() * interval
        latencies: list[float] = []
        errors: Counter[str] = Counter()
        by_kind: Counter[str] = Counter()
        ok = operations = sent = 0
        for kind, partner, request in work:
            now = time.perf_counter()
            if now >= deadline:
                break
            if interval:
                if next_send > now:
                    time.sleep(next_send - now)
                next_send += interval
            if kind == "reverse":
                if not burns[partner]:
                    kind, request = "earn", self._earn(request.request_id, int(partner[-1]))
                else:
                    request.transaction_id = burns[partner].popleft()
            sent += 1
            started = time.perf_counter()
            try:
                response = calls[partner][kind](request)
            except HubError as error:
                latencies.append((time.perf_counter() - started) * 1e3)
                errors[error.code.name] += 1
                continue
            latencies.append((time.perf_counter() - started) * 1e3)
            ok += 1
            by_kind[kind] += 1
            if kind == "batch_earn":
                operations += response.applied_count + response.replayed_count
                if response.failed_count:
                    errors["BATCH_ITEM_FAILED"] += response.failed_count
            else:
                operations += 1
            if kind == "burn":
                burns[partner].append(response.transaction.transaction_id)
        with self.lock:
            self.result.requests += sent
            self.result.ok += ok
            self.result.operations += operations
            self.result.errors.update(errors)
            self.result.by_kind.update(by_kind)
            self.result.latencies_ms.extend(latencies)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
