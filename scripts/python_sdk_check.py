"""The official `openai` and `anthropic` Python SDKs against `tollgate proxy` (run by
scripts/python-sdk-test): gateways of one `[upstream]` here, one of `[[models]]` groups in
scripts/python_sdk_groups.py.

Each check prints one line; the last line counts them, and the exit code is 1 if any failed.

  python_sdk_check.py --gateway URL --exhausted-gateway URL --sim URL --key GATEWAY_KEY
      --groups-gateway URL --openai-sim URL --anthropic-sim URL
"""

import argparse
import json
import sys
import time
import traceback
import urllib.request

import anthropic
import openai

import python_sdk_groups

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Say hello in a few words."}]


def chat(client):
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=20)
    text = completion.choices[0].message.content
    assert completion.object == "chat.completion", completion
    assert text, completion
    assert completion.usage.completion_tokens > 0, completion.usage
    return f"{completion.usage.completion_tokens} tokens: {text!r}"


def streaming_chat(client):
    started = time.monotonic()
    arrivals, text, finish = [], [], None
    for chunk in client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=24, stream=True
    ):
        arrivals.append(time.monotonic() - started)
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert len(arrivals) > 5, f"only {len(arrivals)} chunks"
    assert "".join(text), "no content"
    assert finish in ("stop", "length"), finish
    spread = arrivals[-1] - arrivals[0]
    # The simulator writes one token every 10 ms: a buffered stream would arrive all at once.
    assert spread > 0.05, f"all {len(arrivals)} chunks arrived within {spread * 1000:.0f} ms"
    return f"{len(arrivals)} chunks over {spread * 1000:.0f} ms: {''.join(text)!r}"


def embeddings(client):
    result = client.embeddings.create(
        model="text-embedding-3-small", input=["the first passage", "the second passage"]
    )
    assert len(result.data) == 2, result
    dimensions = len(result.data[0].embedding)
    assert dimensions > 0 and len(result.data[1].embedding) == dimensions
    return f"2 vectors of {dimensions} dimensions"


def wrong_gateway_key(base_url):
    client = openai.OpenAI(base_url=base_url, api_key="tg-not-a-gateway-key", max_retries=0)
    try:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    except openai.AuthenticationError as error:
        assert error.status_code == 401, error
        return "openai.AuthenticationError (401)"
    raise AssertionError("a wrong gateway key was accepted")


def exhausted_quota(base_url, key):
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
    try:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    except openai.RateLimitError as error:
        assert error.status_code == 429, error
        assert error.code == "insufficient_quota", error.body
        return f"openai.RateLimitError (429 {error.code})"
    raise AssertionError("no RateLimitError for an exhausted upstream quota")


def upstream_saw_only_its_keys(sim_url):
    with urllib.request.urlopen(f"{sim_url}/sim/stats", timeout=10) as response:
        stats = json.load(response)
    rejected = stats.get("rejected", {})
    assert "unauthorized" not in rejected, f"the upstream refused a key: {stats}"
    assert set(stats["keys"]) <= {"upstream", "exhausted"}, stats["keys"]
    assert rejected.get("quota_exhausted") == 1, f"exactly one call, not retried: {stats}"
    return f"{stats['received']} calls, keys {sorted(stats['keys'])}, no 401"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True, help="the gateway in front of a good key")
    parser.add_argument("--exhausted-gateway", required=True, help="one in front of an exhausted key")
    parser.add_argument("--sim", required=True, help="the simulator, for its stats")
    parser.add_argument("--key", required=True, help="a gateway key")
    parser.add_argument("--groups-gateway", required=True, help="the gateway of model groups")
    parser.add_argument("--openai-sim", required=True, help="the OpenAI account of group chat")
    parser.add_argument("--anthropic-sim", required=True, help="the Anthropic account of group claude")
    args = parser.parse_args()
    print(f"openai {openai.__version__}, anthropic {anthropic.__version__}")
    client = openai.OpenAI(base_url=f"{args.gateway}/v1", api_key=args.key)
    checks = [
        ("chat completion", lambda: chat(client)),
        ("streaming chat", lambda: streaming_chat(client)),
        ("embeddings", lambda: embeddings(client)),
        ("a wrong gateway key", lambda: wrong_gateway_key(f"{args.gateway}/v1")),
        ("an exhausted upstream quota", lambda: exhausted_quota(f"{args.exhausted_gateway}/v1", args.key)),
        ("the upstream saw only the configured keys", lambda: upstream_saw_only_its_keys(args.sim)),
    ]
    checks += python_sdk_groups.checks(
        args.groups_gateway, args.key, args.openai_sim, args.anthropic_sim
    )
    passed = failed = 0
    for name, check in checks:
        try:
            print(f"ok      {name}: {check()}")
            passed += 1
        except Exception:  # noqa: BLE001 - every failure is reported, then counted
            print(f"FAILED  {name}:")
            traceback.print_exc(file=sys.stdout)
            failed += 1
    print(f"python_sdk_check: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
