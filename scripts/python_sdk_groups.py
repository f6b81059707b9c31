"""The `openai` and `anthropic` Python SDKs against one gateway of two `[[models]]` groups.

`chat` is an OpenAI account (gpt-4o-mini), `claude` an Anthropic one (claude-3-5-haiku-latest),
each a `tollgate sim` of its own. scripts/python_sdk_check.py runs these checks after its own;
scripts/python-sdk-test starts the servers.
"""

import json
import time
import urllib.request

import anthropic
import openai

# The groups, in the order of the gateway's config, and what each asks its provider for.
GROUPS = ["chat", "claude"]
OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-3-5-haiku-latest"
# x-tollgate-deployment: the group's name, then its deployment's.
OPENAI_DEPLOYMENT = "chat/openai-account"
ANTHROPIC_DEPLOYMENT = "claude/anthropic-account"
MESSAGES = [{"role": "user", "content": "Say hello in a few words."}]


def over_time(arrivals, what):
    """The spread of `arrivals` (seconds), which must be more than a buffered answer's."""
    assert len(arrivals) > 5, f"only {len(arrivals)} {what}"
    spread = arrivals[-1] - arrivals[0]
    # The simulators write one token every 10 ms: a buffered stream would arrive all at once.
    assert spread > 0.05, f"all {len(arrivals)} {what} arrived within {spread * 1000:.0f} ms"
    return spread


def group_chat(client):
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=MESSAGES, max_tokens=20
    )
    deployment = raw.headers.get("x-tollgate-deployment")
    completion = raw.parse()
    text = completion.choices[0].message.content
    assert deployment == OPENAI_DEPLOYMENT, f"x-tollgate-deployment: {deployment!r}"
    assert completion.model == OPENAI_MODEL, f"the upstream's model, not {completion.model!r}"
    assert text, completion
    assert completion.usage.completion_tokens > 0, completion.usage
    tokens = completion.usage.completion_tokens
    return f"{completion.model} via {deployment}, {tokens} tokens: {text!r}"


def group_streaming_chat(client):
    started = time.monotonic()
    arrivals, text, models, finish = [], [], set(), None
    for chunk in client.chat.completions.create(
        model="chat", messages=MESSAGES, max_tokens=24, stream=True
    ):
        arrivals.append(time.monotonic() - started)
        models.add(chunk.model)
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    spread = over_time(arrivals, "chunks")
    assert "".join(text), "no content"
    assert finish in ("stop", "length"), finish
    assert models == {OPENAI_MODEL}, f"the chunks name {models}"
    return f"{len(arrivals)} chunks over {spread * 1000:.0f} ms: {''.join(text)!r}"


def openai_model_list(client):
    ids = [model.id for model in client.models.list()]
    assert ids == GROUPS, f"the groups, in order: {ids}"
    return f"{ids}"


def responses_json(client):
    response = client.responses.create(model="chat", input="Say hello in a few words.")
    assert response.status == "completed", response
    assert response.model == OPENAI_MODEL, f"the upstream's model, not {response.model!r}"
    assert response.output_text, response
    assert response.usage.output_tokens > 0 and response.usage.input_tokens > 0, response.usage
    return f"{response.usage.output_tokens} tokens: {response.output_text!r}"


def responses_stream(client):
    started = time.monotonic()
    arrivals, deltas, types, completed = [], [], [], None
    for event in client.responses.create(
        # Above the simulator's longest answer (24 tokens): the stream completes, not cut.
        model="chat", input="Say hello in a few words.", max_output_tokens=64, stream=True
    ):
        types.append(event.type)
        if event.type == "response.output_text.delta":
            arrivals.append(time.monotonic() - started)
            deltas.append(event.delta)
        elif event.type == "response.completed":
            completed = event.response
    spread = over_time(arrivals, "response.output_text.delta events")
    assert types[0] == "response.created", types
    assert types[-1] == "response.completed", f"the last event is {types[-1]}"
    assert completed.usage.output_tokens > 0, completed.usage
    assert completed.output_text == "".join(deltas), (completed.output_text, deltas)
    return (
        f"{len(types)} events, {len(deltas)} deltas over {spread * 1000:.0f} ms, "
        f"completed with {completed.usage.output_tokens} output tokens"
    )


def unknown_model(client):
    try:
        client.chat.completions.create(model="gpt-5", messages=MESSAGES, max_tokens=5)
    except openai.NotFoundError as error:
        assert error.status_code == 404, error
        assert error.code == "model_not_found", error.body
        return f"openai.NotFoundError (404 {error.code})"
    raise AssertionError("a model the gateway does not serve was answered")


def anthropic_group_on_openai_routes(client):
    calls = {
        "chat.completions": lambda: client.chat.completions.create(
            model="claude", messages=MESSAGES, max_tokens=5
        ),
        "responses": lambda: client.responses.create(model="claude", input="Hi"),
    }
    for route, call in calls.items():
        try:
            call()
        except openai.BadRequestError as error:
            assert error.status_code == 400, error
            assert "/v1/messages" in str(error), error
            continue
        raise AssertionError(f"an Anthropic group answered OpenAI's {route}")
    return "openai.BadRequestError (400, pointing at /v1/messages) from chat and responses"


def messages(client):
    raw = client.messages.with_raw_response.create(
        model="claude", max_tokens=20, messages=MESSAGES
    )
    deployment = raw.headers.get("x-tollgate-deployment")
    message = raw.parse()
    text = "".join(block.text for block in message.content if block.type == "text")
    assert deployment == ANTHROPIC_DEPLOYMENT, f"x-tollgate-deployment: {deployment!r}"
    assert message.model == ANTHROPIC_MODEL, f"the upstream's model, not {message.model!r}"
    assert text, message
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0, message.usage
    assert message.stop_reason in ("end_turn", "max_tokens"), message.stop_reason
    return f"{message.model} via {deployment}, {message.usage.output_tokens} tokens: {text!r}"


def messages_stream(client):
    started = time.monotonic()
    arrivals, text = [], []
    with client.messages.stream(model="claude", max_tokens=24, messages=MESSAGES) as stream:
        for delta in stream.text_stream:
            arrivals.append(time.monotonic() - started)
            text.append(delta)
        final = stream.get_final_message()
    spread = over_time(arrivals, "text deltas")
    assert "".join(text), "no content"
    assert final.model == ANTHROPIC_MODEL, final.model
    assert final.usage.output_tokens > 0, final.usage
    return f"{len(arrivals)} text deltas over {spread * 1000:.0f} ms: {''.join(text)!r}"


def anthropic_model_list(client):
    ids = [model.id for model in client.models.list()]
    assert ids == GROUPS, f"the groups, in order: {ids}"
    return f"{ids}"


def anthropic_error(call, error_class, status, error_type):
    """Calls `call`, which must raise `error_class` with `status` and Anthropic's `error_type`."""
    try:
        call()
    except error_class as error:
        assert error.status_code == status, error
        got = error.body.get("error", {}).get("type") if isinstance(error.body, dict) else None
        assert got == error_type, f"Anthropic's error shape, type {error_type}: {error.body}"
        return f"anthropic.{error_class.__name__} ({status} {got})"
    raise AssertionError(f"no {error_class.__name__}")


def messages_unknown_model(client):
    return anthropic_error(
        lambda: client.messages.create(model="claude-9", max_tokens=5, messages=MESSAGES),
        anthropic.NotFoundError,
        404,
        "not_found_error",
    )


def openai_group_on_messages(client):
    return anthropic_error(
        lambda: client.messages.create(model="chat", max_tokens=5, messages=MESSAGES),
        anthropic.BadRequestError,
        400,
        "invalid_request_error",
    )


def messages_wrong_gateway_key(gateway):
    client = anthropic.Anthropic(base_url=gateway, api_key="tg-not-a-gateway-key", max_retries=0)
    return anthropic_error(
        lambda: client.messages.create(model="claude", max_tokens=5, messages=MESSAGES),
        anthropic.AuthenticationError,
        401,
        "authentication_error",
    )


def stats(sim_url):
    with urllib.request.urlopen(f"{sim_url}/sim/stats", timeout=10) as response:
        return json.load(response)


def accounts_saw_their_own_keys(openai_sim, anthropic_sim):
    seen = []
    for url, key in [(openai_sim, "openai"), (anthropic_sim, "anthropic")]:
        account = stats(url)
        assert not account.get("rejected"), f"the {key} account refused calls: {account}"
        assert set(account["keys"]) == {key}, f"the {key} account saw keys {account['keys']}"
        seen.append(f"{key} {account['received']} calls")
    return ", ".join(seen) + ", each with its own key, none refused"


# The tenant of scripts/python-sdk-test's gateway of groups: two requests a minute.
TENANT_KEY = "tg-sdk-tenant"


def tenant_requests(gateway, tenant="sdk-tenant"):
    with urllib.request.urlopen(f"{gateway}/metrics", timeout=10) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(f'tollgate_tenant_requests_total{{tenant="{tenant}"}}'):
            return int(line.split()[-1])
    raise AssertionError(f"no tollgate_tenant_requests_total for {tenant} in /metrics:\n{text}")


# A tenant with two thousandths of a cent a day: a few small calls, then its budget is spent.
BUDGET_KEY = "tg-sdk-budget"


def tenant_over_its_budget(gateway):
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key=BUDGET_KEY, max_retries=2)
    before = tenant_requests(gateway, "sdk-budget")
    for calls in range(1, 50):
        try:
            client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=5)
        except openai.RateLimitError as error:
            assert error.status_code == 429, error
            assert error.code == "insufficient_quota", error.body
            assert error.response.headers.get("x-should-retry") == "false"
            made = tenant_requests(gateway, "sdk-budget") - before
            assert made == calls, f"the SDK retried: {made} requests for {calls} calls"
            return f"openai.RateLimitError (429 insufficient_quota) on call {calls}: no retries"
    raise AssertionError("a budget of $0.00002 a day answered 49 calls")


def tenant_over_its_limit(gateway):
    # The SDK's default retries are on: the gateway's refusal says not to use them.
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key=TENANT_KEY, max_retries=2)
    before = tenant_requests(gateway)
    for _ in range(2):
        client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=5)
    try:
        client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=5)
    except openai.RateLimitError as error:
        assert error.status_code == 429, error
        assert error.response.headers.get("x-should-retry") == "false", error.response.headers
        made = tenant_requests(gateway) - before
        assert made == 3, f"the SDK retried: the gateway saw {made} requests for 3 calls"
        return f"openai.RateLimitError (429) on the third call, {made} requests: no retries"
    raise AssertionError("a tenant of two requests a minute made three")


def checks(gateway, key, openai_sim, anthropic_sim):
    """(name, check) for each check against the gateway of groups at `gateway`."""
    oai = openai.OpenAI(base_url=f"{gateway}/v1", api_key=key, max_retries=0)
    claude = anthropic.Anthropic(base_url=gateway, api_key=key, max_retries=0)
    return [
        ("group chat: a chat completion", lambda: group_chat(oai)),
        ("group chat: a streamed chat", lambda: group_streaming_chat(oai)),
        ("group chat: the Responses API", lambda: responses_json(oai)),
        ("group chat: the Responses API streamed", lambda: responses_stream(oai)),
        ("groups: openai models.list()", lambda: openai_model_list(oai)),
        ("groups: an unknown model", lambda: unknown_model(oai)),
        ("groups: claude on OpenAI's routes", lambda: anthropic_group_on_openai_routes(oai)),
        ("group claude: anthropic messages.create()", lambda: messages(claude)),
        ("group claude: anthropic messages.stream()", lambda: messages_stream(claude)),
        ("groups: anthropic models.list()", lambda: anthropic_model_list(claude)),
        ("groups: an unknown model on the Messages API", lambda: messages_unknown_model(claude)),
        ("groups: chat on the Messages API", lambda: openai_group_on_messages(claude)),
        ("groups: a wrong gateway key in x-api-key", lambda: messages_wrong_gateway_key(gateway)),
        (
            "groups: each account saw only its own key",
            lambda: accounts_saw_their_own_keys(openai_sim, anthropic_sim),
        ),
        ("tenants: over its own limit, not retried", lambda: tenant_over_its_limit(gateway)),
        ("tenants: over its budget, not retried", lambda: tenant_over_its_budget(gateway)),
    ]
