"""Replica routing (judge/backends/routing.py), the prompt layouts, RVPO_JUDGE_BASE_URLS parsing and the fake
LLM's prefix-cache model, each against values worked out here from the documented rules.

The ring is rebuilt independently in `ring_order` from its documented definition (blake2b-64 of ``url#v``,
clockwise from the key's blake2b-64); a fake clock drives cool-downs."""

from __future__ import annotations

import bisect
import hashlib

import pytest

from judge import prompt
from judge.backends.routing import PIN_TTL_S, Router, example_keys
from judge.settings import JudgeSettings
from tests.fake_prefix_cache import PrefixCache

URLS = [f"http://grader-{i}:8000/v1" for i in range(4)]


def h64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def ring_order(key: str, urls=URLS, vnodes: int = 64) -> list[int]:
    """Distinct replica indices met walking clockwise from the key's point."""
    points = sorted((h64(f"{u}#{v}"), i) for i, u in enumerate(urls) for v in range(vnodes))
    start = bisect.bisect([p for p, _ in points], h64(key))
    order: list[int] = []
    for step in range(len(points)):
        i = points[(start + step) % len(points)][1]
        if i not in order:
            order.append(i)
    return order


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def router(**kw) -> tuple[Router, Clock]:
    clock = Clock()
    return Router(kw.pop("urls", URLS), clock=clock, **kw), clock


def test_sticky_follows_the_ring_and_pins_every_criterion_of_an_example():
    r, clock = router()
    for k in range(20):
        key = f"prompt-{k}"
        first = ring_order(key)[0]
        got = [r.acquire(key, f"ex-{k}") for _ in range(12)]  # 12 criteria in flight together
        assert [g.index for g in got] == [first] * 12  # no other load: its ring point, all 12 there
        for g in got:
            r.release(g, ok=True, pin_key=f"ex-{k}")
    assert all(rep.inflight == 0 for rep in r.replicas)
    # idle pins expire; the ring decides again (same answer with no load)
    clock.t += PIN_TTL_S + 1
    assert r.acquire("prompt-3", "ex-3").index == ring_order("prompt-3")[0]


def test_bounded_loads_send_a_new_example_to_the_next_replica_on_the_ring():
    r, _ = router(load_factor=1.25)
    key = "the same prompt"
    order = ring_order(key)
    busy = [r.acquire(key, "example-A") for _ in range(10)]  # example A: 10 criteria on its ring replica
    assert {b.index for b in busy} == {order[0]}
    # mean in-flight = 10 / 4 = 2.5, bound 1.25 * 2.5 = 3.125 < 10: example B (same prompt) spills
    b = r.acquire(key, "example-B")
    assert b.index == order[1]
    # ... and all of B's criteria stay with it, A's with A
    assert r.acquire(key, "example-B").index == order[1]
    assert r.acquire(key, "example-A").index == order[0]
    # with the bound at 4x the mean (11 <= 4 * 13/4 = 13), a third example of the prompt joins A's replica
    r.load_factor = 4.0
    assert r.acquire(key, "example-C").index == order[0]


def test_cooldown_failover_and_the_single_replica_fallback():
    r, clock = router(failures=2, cooldown_s=10.0)
    key = "prompt-x"
    order = ring_order(key)
    first = r.acquire(key, "ex")
    assert first.index == order[0]
    r.release(first, ok=False, reason="transport", pin_key="ex")
    # a retry of this request excludes the replica it failed on: the example is re-pinned to the next one
    second = r.acquire(key, "ex", exclude={first.index})
    assert second.index == order[1]
    r.release(second, ok=True, pin_key="ex")
    later = r.acquire(key, "ex")
    assert later.index == order[1]  # later criteria follow the new pin
    r.release(later, ok=True, pin_key="ex")
    # one failure is not enough for the cool-down (failures=2); a second consecutive one is
    assert r.replicas[order[0]].available(clock())
    bad = r.replicas[order[0]]
    bad.inflight += 1
    r.release(bad, ok=False, reason="timeout")
    assert not bad.available(clock())
    skipped = r.acquire(key, "new-example")
    assert skipped.index == order[1]  # skipped during the cool-down
    r.release(skipped, ok=True, pin_key="new-example")
    assert r.any_untried({order[1], order[2], order[3]}) is False
    clock.t += 10.0
    assert bad.available(clock())
    trial = r.acquire(key, "another")
    assert trial is bad  # back after it, half-open: one trial request at a time
    other = r.acquire(key, "a third")
    assert other.index == order[1] and not bad.available(clock())
    r.release(other, ok=True, pin_key="a third")
    r.release(trial, ok=False, reason="transport", pin_key="another")  # the trial fails: cool-down at once
    assert not bad.available(clock()) and bad.down_until == clock() + 10.0
    clock.t += 10.0
    trial = r.acquire(key, "a fourth")
    r.release(trial, ok=True, pin_key="a fourth")  # the trial succeeds: fully available again
    assert trial is bad and r.acquire(key, "more").index == order[0]
    assert bad.inflight == 1 and bad.available(clock())  # no longer limited to one request at a time
    # one replica: failures never leave a request without a replica
    one, clock1 = router(urls=URLS[:1], failures=1)
    rep = one.acquire("k", "e")
    one.release(rep, ok=False, reason="503")
    assert not rep.available(clock1()) and one.acquire("k", "e", exclude={0}) is rep


def test_round_robin_and_random_skip_cooling_replicas():
    r, _ = router(policy="round_robin", failures=1)
    assert [r.acquire("same", "same").index for _ in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]
    r.release(r.replicas[1], ok=False, reason="503")
    assert [r.acquire().index for _ in range(6)] == [0, 2, 3, 0, 2, 3]
    rnd, _ = router(policy="random", failures=1)
    rnd.release(rnd.replicas[2], ok=False, reason="503")
    assert {rnd.acquire().index for _ in range(200)} == {0, 1, 3}


def test_router_rejects_bad_configuration():
    with pytest.raises(ValueError, match="urls"):
        Router([])
    with pytest.raises(ValueError, match="twice"):
        Router([URLS[0], URLS[0]])
    with pytest.raises(ValueError, match="policy"):
        Router(URLS, policy="least_loaded")


def test_example_keys():
    p1 = [{"role": "user", "content": "I have a fever."}]
    p2 = [{"role": "user", "content": "I have a cough."}]
    a, pin_a = example_keys(p1, "Rest.")
    b, pin_b = example_keys(p1, "Drink water.")
    assert a == b and pin_a != pin_b  # prompt key: the completions of one prompt share the ring point
    assert example_keys(p2, "Rest.")[0] != a
    ex_a, ex_pin = example_keys(p1, "Rest.", "example")
    assert ex_a == ex_pin == pin_a
    with pytest.raises(ValueError, match="routing_key"):
        example_keys(p1, "Rest.", "completion")


@pytest.mark.parametrize("value, urls", [
    ("http://a:1/v1,http://b:2/v1/", ["http://a:1/v1", "http://b:2/v1"]),
    ("http://a:1/v1  http://b:2/v1", ["http://a:1/v1", "http://b:2/v1"]),
    ('["http://a:1/v1", "https://b/v1"]', ["http://a:1/v1", "https://b/v1"]),
])
def test_base_urls_setting(monkeypatch, value, urls):
    monkeypatch.setenv("RVPO_JUDGE_BASE_URLS", value)
    assert JudgeSettings().backend_urls() == urls


def test_base_urls_setting_errors_and_the_single_url(monkeypatch):
    monkeypatch.delenv("RVPO_JUDGE_BASE_URLS", raising=False)
    monkeypatch.setenv("RVPO_JUDGE_BASE_URL", "http://only:8080/v1/")
    assert JudgeSettings().backend_urls() == ["http://only:8080/v1"]
    for bad, match in [("grpc://x:1", "http"), ("http://a/v1,http://a/v1", "twice"), ("[oops", "JSON")]:
        monkeypatch.setenv("RVPO_JUDGE_BASE_URLS", bad)
        with pytest.raises(ValueError, match=match):
            JudgeSettings()


def test_prompt_layouts():
    conv = prompt.render_conversation([{"role": "user", "content": "headache?"}], "Rest.", "n0nce")
    sf = prompt.grader_messages(conv, "Advises rest", 5)
    cf = prompt.grader_messages(conv, "Advises rest", 5, layout="conversation_first")
    assert [m["role"] for m in sf] == ["system", "user"] and sf[0]["content"] == prompt.SYSTEM_JSON
    assert [m["role"] for m in cf] == ["user"]
    text = cf[0]["content"]
    # the conversation first, then the same instructions, the rubric item last
    assert text == f"# Conversation\n{conv}\n\n{prompt.SYSTEM_JSON}\n# Rubric item\n[5] Advises rest"
    assert sf[1]["content"] == f"# Conversation\n{conv}\n\n# Rubric item\n[5] Advises rest"
    yn = prompt.grader_messages(conv, "Advises rest", 5, yes_no=True, layout="conversation_first")
    assert yn[0]["content"].endswith("[5] Advises rest\n\n" + prompt.YES_NO_QUESTION)
    assert prompt.SYSTEM_YES_NO in yn[0]["content"]
    assert [prompt.template_version(y, lay) for y in (False, True) for lay in prompt.LAYOUTS] == [
        "hb-grader-v1", "hb-grader-v1-cf", "hb-grader-v1-yesno", "hb-grader-v1-yesno-cf"]
    with pytest.raises(ValueError, match="layout"):
        prompt.grader_messages(conv, "x", 1, layout="criterion_first")
    with pytest.raises(ValueError, match="layout"):
        prompt.template_version(False, "criterion_first")


def test_fake_prefix_cache_by_hand():
    # 1 character per token, blocks of 4 tokens, room for 3 blocks
    cache = PrefixCache(capacity_tokens=12, block_tokens=4, chars_per_token=1)
    a = [{"role": "user", "content": "abcdefgh"}]   # "<|user|>\nabcdefgh\n<|assistant|>\n" = 32 chars
    first = cache.lookup(a)
    assert (first.prompt_tokens, first.cached, first.computed) == (32, 0, 32)
    # the same prompt again: its 8 full blocks were cached but only 3 fit (LRU keeps the LAST 3), and a prefix
    # match needs the first block: nothing is reused
    assert cache.lookup(a).cached == 0
    big = PrefixCache(capacity_tokens=1000, block_tokens=4, chars_per_token=1)
    big.lookup(a)
    assert big.lookup(a).cached == 32  # all 8 full blocks
    b = [{"role": "user", "content": "abcdXYZW"}]   # same first 13 chars "<|user|>\nabcd" -> 3 full blocks
    hit = big.lookup(b)
    assert (hit.prompt_tokens, hit.cached) == (32, 12)
    odd = [{"role": "user", "content": "abcdefg"}]  # 31 chars: 7 full blocks, the last 3 tokens never cached
    assert big.lookup(odd).cached == 16  # shares "<|user|>\nabcdefg" (16 chars = 4 blocks) with a
    assert big.lookup(odd).cached == 28
    with pytest.raises(ValueError):
        PrefixCache(0)
