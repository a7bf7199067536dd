"""Fuzz the live gallery (JSON API and forms) with Hypothesis: no 5xx, no traceback, no bad job.

Requests go over HTTP to `python -m bot` (engine and gallery, no Discord) on 127.0.0.1. After
each one the job count in its database must have grown by one for an accepted request (202, or
the form's 303 to a job page) and by nothing otherwise; every stored job must satisfy the limits.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import re
import urllib.parse
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.system.harness import Program

LIMITS = {
    "max_prompt_chars": 300,
    "min_size_px": 32,
    "max_size_px": 64,
    "max_pixels": 64 * 64,
    "default_steps": 2,
    "max_steps": 4,
    "max_count": 2,
    "max_guidance": 30.0,
    "max_queue": 100_000,
    "max_per_user": 10_000,
}
SEED_MAX = 2**32 - 1
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"/|line \d+, in ")
API_FIELDS = (
    "prompt",
    "negative_prompt",
    "width",
    "height",
    "steps",
    "guidance",
    "seed",
    "count",
    "scheduler",
    "aspect",
    "kind",
    "source_image_id",
    "idempotency_key",
)
FORM_FIELDS = (
    "prompt",
    "negative_prompt",
    "aspect",
    "width",
    "height",
    "steps",
    "guidance",
    "seed",
    "count",
    "scheduler",
    "nonce",
)


@dataclass
class Case:
    """One HTTP request to send."""

    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    kind: str = "read"  # "api" and "form" may queue a job; "read" and "action" never add one


class Browser:
    """One keep-alive HTTP connection with a session cookie and a CSRF token."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.cookie = ""
        self.csrf = ""

    def send(self, case: Case) -> tuple[int, Mapping[str, str], bytes]:
        headers = dict(case.headers)
        if self.cookie:
            headers.setdefault("Cookie", self.cookie)
        for attempt in range(2):
            try:
                self.conn.request(case.method, case.path, body=case.body or None, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                break
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt:
                    raise
        found = response.getheader("Set-Cookie") or ""
        if found.startswith("session="):
            self.cookie = found.split(";", 1)[0]
        if response.getheader("Connection", "").lower() == "close":
            self.conn.close()
        # Header names are case-insensitive (HTTP/1.1 servers may send them in lower case).
        return response.status, response.headers, data

    def close(self) -> None:
        self.conn.close()

    def login_form(self) -> None:
        """Fetch the form once: its session cookie and CSRF token serve every form case."""
        status, _, data = self.send(Case("GET", "/generate"))
        assert status == 200
        match = re.search(rb'name="csrf_token" [^>]*value="([^"]+)"', data) or re.search(
            rb'value="([^"]+)"[^>]*name="csrf_token"', data
        )
        assert match, "no CSRF token in the form"
        self.csrf = match.group(1).decode()


# -- strategies -------------------------------------------------------------------------------

NASTY_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\x00b",
        "\u202e gnp.exe",
        "\u200b\u200d",
        "@everyone <@&1> <@2>",
        "<script>alert(1)</script>",
        '"><img src=x onerror=alert(1)>',
        "javascript:alert(1)",
        "../../etc/passwd",
        "%2e%2e%2f",
        "--ar 3:2 --seed 7 --no cars --steps 30",
        "--steps 100000",
        "--ar 0:0",
        "--seed -1",
        "x" * 5000,
        "²",
        "٣",
        "9" * 5000,
        "NaN",
        "Infinity",
        "-0",
        "1e309",
    ]
)
TEXT = st.one_of(NASTY_TEXT, st.text(max_size=80))
NUMBER = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-10, max_value=200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 7, 8, 32, 64, 1000, 10**9, SEED_MAX, SEED_MAX + 1, -1, 2**63, 2**64]),
)
JSON_LEAF = st.one_of(st.none(), st.booleans(), NUMBER, TEXT)
ANY_JSON = st.recursive(
    JSON_LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
FIELD_VALUE = st.one_of(
    JSON_LEAF,
    st.sampled_from(["txt2img", "variation", "upscale", "DDIM", "Euler a", "3:2", "16:9"]),
    st.lists(JSON_LEAF, max_size=2),
)
QUERY_VALUE = st.one_of(
    TEXT,
    NUMBER.map(str),
    st.sampled_from(["²", "٣", "9" * 30, "-1", "0", "1", "2026-11-27", "2026-02-30", "\x00"]),
)
HEADER_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=0, max_size=120
)


WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ", min_size=1, max_size=40)
GOOD_FIELD = {
    "prompt": WORDS,
    "negative_prompt": WORDS,
    "width": st.sampled_from([32, 40, 48, 56, 64]),
    "height": st.sampled_from([32, 40, 48, 56, 64]),
    "steps": st.integers(1, 4),
    "guidance": st.floats(0, 30),
    "seed": st.integers(0, SEED_MAX),
    "count": st.integers(1, 2),
    "scheduler": st.sampled_from(["DPM++ 2M", "DPM++ 2M Karras", "Euler a", "Euler", "DDIM"]),
    "aspect": st.sampled_from(["1:1", "3:2", "2:3", "16:9"]),
    "kind": st.just("txt2img"),
    "source_image_id": TEXT,
    "idempotency_key": HEADER_TEXT,
}


def field_value(name: str) -> st.SearchStrategy[Any]:
    """Mostly a value in range, sometimes anything at all."""
    return st.one_of(GOOD_FIELD[name], GOOD_FIELD[name], GOOD_FIELD[name], FIELD_VALUE)


@st.composite
def api_case(draw: st.DrawFn) -> Case:
    shape = draw(st.sampled_from(["fields", "fields", "fields", "any", "bytes"]))
    if shape == "fields":
        keys = draw(st.lists(st.sampled_from(API_FIELDS), unique=True, max_size=8))
        body_obj: Any = {key: draw(field_value(key)) for key in keys}
        if draw(st.integers(0, 4)):
            body_obj["prompt"] = draw(st.one_of(WORDS, WORDS, WORDS, TEXT))
        if draw(st.integers(0, 9)) == 0:
            body_obj[draw(st.text(max_size=12))] = draw(JSON_LEAF)
        body = json.dumps(body_obj).encode()
    elif shape == "any":
        body = json.dumps(draw(ANY_JSON)).encode()
    else:
        body = draw(st.binary(max_size=200))
    content_type = draw(
        st.sampled_from(
            [
                "application/json",
                "application/json",
                "text/plain",
                "application/x-www-form-urlencoded",
            ]
        )
    )
    headers = {"Content-Type": content_type}
    if draw(st.booleans()):
        headers["Idempotency-Key"] = draw(HEADER_TEXT)
    return Case("POST", "/api/v1/generations", body, headers, kind="api")


@st.composite
def form_case(draw: st.DrawFn) -> Case:
    keys = draw(st.lists(st.sampled_from(FORM_FIELDS), unique=True, max_size=9))
    fields = {
        key: str(draw(field_value(key if key != "nonce" else "source_image_id"))) for key in keys
    }
    with_token = draw(st.integers(0, 4)) > 0
    if with_token:
        fields["csrf_token"] = "{csrf}"
    body = urllib.parse.urlencode(fields).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    return Case("POST", "/generate", body, headers, kind="form")


def segment(draw: st.DrawFn) -> str:
    raw = draw(st.one_of(TEXT, st.from_regex(r"[0-9a-f]{12}(-[0-9])?", fullmatch=True)))
    return urllib.parse.quote(raw, safe=draw(st.sampled_from(["", "/", "%."])))


@st.composite
def read_case(draw: st.DrawFn) -> Case:
    template = draw(
        st.sampled_from(
            [
                "/api/v1/jobs/{}",
                "/api/v1/images/{}",
                "/files/{}",
                "/files/{}.png",
                "/images/{}",
                "/images/{}/download",
                "/jobs/{}",
                "/generate?from={}",
                "/generate?prompt={}",
            ]
        )
    )
    path = template.format(segment(draw))
    if draw(st.booleans()):
        keys = ["q", "limit", "cursor", "source", "author", "since", "until", "favourites"]
        args = {
            key: str(draw(st.one_of(TEXT, NUMBER.map(str))))
            for key in draw(st.lists(st.sampled_from(keys), unique=True, max_size=4))
        }
        base = draw(st.sampled_from(["/api/v1/images", "/"]))
        path = base + "?" + urllib.parse.urlencode(args)
    return Case("GET", path)


@st.composite
def action_case(draw: st.DrawFn) -> Case:
    template = draw(
        st.sampled_from(
            [
                "/images/{}/favourite",
                "/images/{}/delete",
                "/images/{}/variation",
                "/images/{}/upscale",
                "/jobs/{}/cancel",
                "/login",
                "/logout",
            ]
        )
    )
    fields = {"csrf_token": "{csrf}"} if draw(st.booleans()) else {}
    fields.update({"token": draw(TEXT)} if draw(st.booleans()) else {})
    body = urllib.parse.urlencode(fields).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    return Case("POST", template.format(segment(draw)), body, headers, kind="action")


# An even draw among the surfaces (plain one_of leans on its first branches).
CASE = st.sampled_from([api_case, api_case, form_case, read_case, read_case, action_case]).flatmap(
    lambda make: make()
)


# -- checks -----------------------------------------------------------------------------------


def is_valid_job(request: dict[str, Any]) -> str | None:
    """Return what is wrong with a stored job's request, or None."""
    width, height = request.get("width"), request.get("height")
    checks = {
        "width": isinstance(width, int) and 32 <= width <= 64 and width % 8 == 0,
        "height": isinstance(height, int) and 32 <= height <= 64 and height % 8 == 0,
        "steps": isinstance(request.get("steps"), int) and 1 <= request["steps"] <= 4,
        "count": isinstance(request.get("count"), int) and 1 <= request["count"] <= 2,
        "seed": isinstance(request.get("seed"), int) and 0 <= request["seed"] <= SEED_MAX,
        "guidance": isinstance(request.get("guidance"), int | float)
        and math.isfinite(request["guidance"])
        and 0 <= request["guidance"] <= 30,
        "prompt": isinstance(request.get("prompt"), str)
        and 0 < len(request["prompt"]) <= 300
        and "\x00" not in request["prompt"],
    }
    bad = [name for name, ok in checks.items() if not ok]
    return f"{bad}: {request}" if bad else None


def is_accepted(case: Case, status: int, headers: Mapping[str, str]) -> bool:
    if case.kind == "api":
        return status == 202
    if case.kind == "form":
        return status == 303 and headers.get("Location", "").startswith("/jobs/")
    return False


def answered_job(case: Case, headers: Mapping[str, str], data: bytes) -> str:
    if case.kind == "api":
        return str(json.loads(data)["job_id"])
    return headers.get("Location", "").rsplit("/", 1)[-1]


def api(body: Any, **headers: str) -> Case:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Case(
        "POST", "/api/v1/generations", raw, {"Content-Type": "application/json", **headers}, "api"
    )


# Inputs from FAULTS.md 2, 4, 5 and 6, and the crashers fuzzing found, sent every run.
EXPLICIT = [
    api({"prompt": "fox", "width": 7}),
    api({"prompt": "fox", "width": 0}),
    api({"prompt": "fox", "width": -64}),
    api({"prompt": "fox", "width": 10**9}),
    api({"prompt": "fox", "width": 36}),
    api(b'{"prompt": "fox", "guidance": NaN}'),
    api(b'{"prompt": "fox", "guidance": Infinity}'),
    api({"prompt": "fox", "steps": 0}),
    api({"prompt": "fox", "steps": 100_000}),
    api({"prompt": "fox", "count": 1000}),
    api({"prompt": "fox", "seed": -1}),
    api({"prompt": "fox", "seed": 2**32}),
    api({"prompt": "fox", "seed": 2**64}),
    api({"prompt": "fox", "width": 64, "height": 64, "steps": 4, "count": 2}),
    api({"prompt": ""}),
    api({"prompt": " \t\n"}),
    api({"prompt": "\x00\x01\u202e\u200b"}),
    api({"prompt": "x" * 10_000}),
    api({"prompt": "fox --steps 100000 --ar 999:1 --seed -4"}),
    api({"prompt": "fox", "kind": "upscale"}),
    api({"prompt": "fox", "kind": "variation", "source_image_id": "../../etc/passwd"}),
    api([1, 2, 3]),
    api(b"{"),
    api(b"\xff\xfe"),
    Case("GET", "/api/v1/images?q=%00"),
    Case("GET", "/?q=a%00b"),
    Case("GET", "/api/v1/images?limit=%C2%B2"),
    Case("GET", "/api/v1/images?limit=%D9%A3"),
    Case("GET", "/?cursor=%C2%B2"),
    Case("GET", "/api/v1/images?cursor=%C2%B2"),
    Case("GET", "/?cursor=99999999999999999999999"),
    Case("GET", "/api/v1/images?cursor=99999999999999999999999"),
    Case("GET", "/files/..%2f..%2fimagine.sqlite3"),
    Case("GET", "/files/%2e%2e%2fimagine.sqlite3"),
    Case("GET", "/files/..%5cimagine.sqlite3"),
    Case("GET", "/files//etc/passwd"),
    Case("GET", "/files/a%00.png"),
]

# Crashers found here that the owners have not fixed yet: (request pattern, the bug). Their
# 5xx are reported, not failed; test_known_crasher_is_fixed fails strictly once one is fixed,
# so this table cannot outlive its bugs.
# (pattern of "METHOD path", why) for 5xx answers that are known bugs; the fuzz run counts
# them apart. Empty: the four crashers it found are fixed and pinned by the test below.
KNOWN_BUGS: list[tuple[str, str]] = []


def known_bug(case: Case) -> str | None:
    line = f"{case.method} {case.path}"
    return next((bug for pattern, bug in KNOWN_BUGS if re.search(pattern, line)), None)


class Fuzzer:
    """Send cases to a running program and judge each answer."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.browser = Browser(program.port)
        self.browser.login_form()
        self.statuses: Counter[int] = Counter()
        self.problems: list[str] = []
        self.known: Counter[str] = Counter()
        self.answered: set[str] = set()

    def run(self, case: Case) -> None:
        case.body = case.body.replace(b"%7Bcsrf%7D", urllib.parse.quote(self.browser.csrf).encode())
        before = self.program.job_count()
        status, headers, data = self.browser.send(case)
        after = self.program.job_count()
        self.statuses[status] += 1
        where = f"{case.method} {case.path[:120]} {case.body[:200]!r} {case.headers}"
        if status >= 500:
            bug = known_bug(case)
            if bug is not None:
                self.known[bug] += 1
            else:
                self.problems.append(f"{status} for {where}: {data[:300]!r}")
        if TRACEBACK.search(data.decode("utf-8", "replace")):
            self.problems.append(f"traceback in the answer to {where}")
        grown = 1 if is_accepted(case, status, headers) else 0
        job_id = answered_job(case, headers, data) if grown else None
        if job_id in self.answered:
            grown = 0  # the same idempotency key again: the same job, nothing new
        self.answered.add(job_id or "")
        if after - before != grown:
            self.problems.append(f"{after - before} new jobs from {status} to {where}")

    def check_jobs(self) -> int:
        rows = self.program.job_rows()
        for row in rows:
            if (wrong := is_valid_job(json.loads(row["request"]))) is not None:
                self.problems.append(f"job {row['id']} breaks the limits: {wrong}")
        return len(rows)


@pytest.fixture(scope="module")
def fuzz_program(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Program]:
    """A running program with small limits, so accepted fuzz jobs stay cheap (one per module)."""
    folder = tmp_path_factory.mktemp("fuzz")
    program = Program(folder, tiny_model_dir, limits=LIMITS, engine={"preview_every_steps": 1000})
    program.start_sync()
    yield program
    with contextlib.suppress(Exception):
        program.terminate_sync(60)
    program.ensure_stopped()


CASES = [
    pytest.param(1_000, id="short", marks=pytest.mark.timeout(600)),
    pytest.param(10_000, id="soak", marks=[pytest.mark.slow, pytest.mark.timeout(3600)]),
]


@pytest.mark.parametrize("examples", CASES)
def test_fuzzed_requests_get_no_5xx_no_traceback_and_make_no_invalid_job(
    fuzz_program: Program, examples: int
) -> None:
    fuzzer = Fuzzer(fuzz_program)
    for case in EXPLICIT:
        fuzzer.run(case)

    @settings(
        max_examples=examples - len(EXPLICIT),
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=CASE)
    def fuzz(case: Case) -> None:
        fuzzer.run(case)

    fuzz()
    jobs = fuzzer.check_jobs()
    fuzzer.browser.close()
    fives = sum(n for status, n in fuzzer.statuses.items() if status >= 500)
    print(
        f"\nFUZZ {sum(fuzzer.statuses.values())} requests, statuses "
        f"{dict(sorted(fuzzer.statuses.items()))}, {jobs} jobs queued, {fives} 5xx "
        f"({sum(fuzzer.known.values())} from known bugs: {dict(fuzzer.known)})"
    )
    assert fuzzer.problems == [], "\n".join(fuzzer.problems[:30])


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/api/v1/images?q=%00", id="search-nul"),
        pytest.param("/api/v1/images?limit=%C2%B2", id="limit-superscript"),
        pytest.param("/?cursor=%C2%B2", id="cursor-superscript"),
        pytest.param("/api/v1/images?cursor=99999999999999999999999", id="cursor-overflow"),
    ],
)
def test_known_crasher_is_fixed(fuzz_program: Program, path: str) -> None:
    with contextlib.closing(Browser(fuzz_program.port)) as browser:
        status, _, data = browser.send(Case("GET", path))
    assert status < 500, data[:200]


def test_the_same_idempotency_key_without_a_cookie_queues_one_job(fuzz_program: Program) -> None:
    body = json.dumps({"prompt": "a fox, sent twice"}).encode()
    headers = {"Content-Type": "application/json", "Idempotency-Key": "retry-after-timeout"}
    answers = []
    for _ in range(2):
        with contextlib.closing(Browser(fuzz_program.port)) as browser:  # no cookie, like curl
            case = Case("POST", "/api/v1/generations", body, headers, "api")
            status, _, data = browser.send(case)
        assert status == 202
        answers.append(json.loads(data)["job_id"])
    assert answers[0] == answers[1]


def test_a_100_mb_body_is_refused_and_memory_stays_flat(fuzz_program: Program) -> None:
    size, chunk = 100 * 1024 * 1024, b"0" * (1024 * 1024)
    jobs = fuzz_program.job_count()
    peak_before = fuzz_program.memory_kb("VmHWM")
    conn = http.client.HTTPConnection("127.0.0.1", fuzz_program.port, timeout=60)
    try:
        conn.putrequest("POST", "/api/v1/generations")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(size // len(chunk)):
                conn.send(chunk)
        status = conn.getresponse().status
    finally:
        conn.close()
    growth_mib = (fuzz_program.memory_kb("VmHWM") - peak_before) / 1024
    print(f"\n100 MB body: {status}, peak RSS grew {growth_mib:.1f} MiB")
    assert status == 413
    assert growth_mib < 32
    assert fuzz_program.job_count() == jobs
