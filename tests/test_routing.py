"""The intent router: thresholds gate, overrides apply, bad files fail clearly, CLI and chat."""

from __future__ import annotations

import io
import json
import textwrap

import pytest
import yaml

from opensage.commands import bind_arguments
from opensage.errors import ConfigError
from opensage.hookspecs import hookimpl
from opensage.host import Host, Session
from opensage.plugins.routing.routing import PACKAGED_ROUTES, Router, RoutesFile, format_call, load_routes, router_for
from opensage.types import ArgModel, Command, CommandResult, Route


def write_user_routes(project, text: str):
    path = project / ".opencode" / "intent-routes.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def decide(host, text):
    return host.route(text, session=Session(id="", source="test", host=host))


# -- decisions and argument filling ------------------------------------------------------

@pytest.mark.parametrize("text, route, arguments", [
    ("what do we know about the auth flow?", "opensage_memory_query", {"query": "auth flow"}),
    ("draw the graph around AuthService", "opensage_memory_visualize", {"centerNode": "AuthService"}),
    ("visualize what's connected to payment_gateway within 3 hops", "opensage_memory_visualize",
     {"centerNode": "payment_gateway", "radius": 3}),
    ("is job-20261121051502-3fa9c2d1 done?", "opensage_poll_job", {"jobId": "job-20261121051502-3fa9c2d1"}),
    ("first add the column, then backfill it, and finally drop the old table", "opensage_vertical",
     {"subtasks": ["add the column", "backfill it", "drop the old table"]}),
    ("we decided to use JWT with 15 minute tokens", "opensage_memory_store", {"type": "decision"}),
    ("build a bash tool that tails the staging logs", "opensage_tool", {"language": "bash"}),
    ("compare redis vs memcached for session storage", "opensage_horizontal",
     {"strategies": ["redis", "memcached"], "task": "session storage"}),
    ("how did we fix the race in the job queue?", "opensage_memory_history",
     {"mode": "history", "query": "how did we fix the race in the job queue?"}),
    ("why did we pick RS256?", "opensage_memory_history", {"mode": "history"}),
    ("check on job 4b9e2f", "opensage_poll_job", {"jobId": "4b9e2f"}),
])
def test_routes_and_fills_arguments(host, text, route, arguments):
    decision = decide(host, text)
    assert decision.route == route
    assert 0.0 <= decision.confidence <= 1.0
    for key, value in arguments.items():
        assert decision.arguments[key] == value


@pytest.mark.parametrize("text", [
    "fix the failing test in test_auth.py",
    "renew the TLS certificate config in nginx.conf",
    "break the parse_args function into smaller functions",
    "write a script that migrates the old config format",
    "is this thread safe?",
])
def test_ordinary_requests_route_to_none(host, text):
    decision = decide(host, text)
    assert decision.route == "none" and decision.command is None and decision.arguments == {}


def test_word_boundaries_not_substrings(project, host):
    write_user_routes(project, """
        routes:
          - name: deploy_notes
            description: Deployment questions.
            command: "@memory-query"
            examples: ["deploy {query}"]
            arguments: {query: {from: slot}}
            confidence_threshold: 0.5
    """)
    assert decide(host, "deploy the api").route == "deploy_notes"
    assert decide(host, "redeploy the api").route == "none"      # no match inside a longer word
    assert decide(host, "depoly the api").route == "deploy_notes"  # a typo still matches


def test_every_route_fills_valid_arguments_for_its_command(host):
    """Each packaged route targets a registered command and fills arguments it accepts."""
    config = load_routes()
    router = Router(config)
    checked = set()
    for route in config.routes:
        if route.command is None:
            continue
        command = host.command(route.command)
        for example in route.templates:
            text = example
            for group in __import__("re").findall(r"\([^()]*\)", example):
                text = text.replace(group, group[1:-1].split("|")[0], 1)
            text = __import__("re").sub(r"\{(\w+)\}", "job-abc123 src/auth.py AuthService", text)
            decision = router.decide(text, session_id="s1")
            if decision.route != route.name:
                continue
            bind_arguments(command, decision.arguments)  # raises UsageError on a bad name or value
            checked.add(route.name)
    assert checked == {r.name for r in config.routes if r.command}


@pytest.mark.parametrize("classifier, how", [("packaged", "classifier"), (None, "meaning")])
def test_every_route_fills_valid_arguments_by_meaning(host, classifier, how):
    """With every template and pattern removed (so only the classifier, or without it
    the nearest examples, decide), each route still fills arguments its command
    accepts, required ones present: the request body for slots, the job id, a path or
    a code-like name from the text."""
    config = load_routes()
    for route in config.routes:
        route.templates, route.patterns = [], []
    router = Router(config, classifier=classifier)
    checked = set()
    for route in config.routes:
        if route.command is None:
            continue
        command = host.command(route.command)
        for example in route.examples:
            decision = router.decide(example, session_id="s1")
            if decision.route != route.name:
                continue
            assert decision.how == how
            bind_arguments(command, decision.arguments)  # raises UsageError on a bad name or value
            for name, spec in route.arguments.items():
                if spec.required:
                    assert decision.arguments.get(name), (example, name)
            checked.add(route.name)
    assert checked == {r.name for r in config.routes if r.command}


@pytest.mark.parametrize("text, route, arguments", [
    ("note for the future - the nightly export needs the VPN", "opensage_memory_store",
     {"content": "nightly export needs the VPN", "label": "nightly export needs the VPN", "type": "concept"}),
    ("pull the services directory into the knowledge graph", "opensage_memory_ingest", {"path": "services"}),
    ("can you check how the long running tool job 9f8e7d6c is doing", "opensage_poll_job", {"jobId": "9f8e7d6c"}),
    ("build the code graph in memory for the android/ module", "opensage_memory_ingest", {"path": "android/"}),
])
def test_classifier_matches_fill_arguments_deterministically(text, route, arguments):
    decision = Router(load_routes()).decide(text)
    assert (decision.route, decision.how) == (route, "classifier")
    for key, value in arguments.items():
        assert decision.arguments.get(key) == value, (key, decision.arguments)


def test_a_how_did_we_fix_question_asks_memory_for_the_history():
    decision = Router(load_routes()).decide("from memory: how did we fix that race condition last week?")
    assert decision.route == "opensage_memory_history" and decision.command == "@memory-query"
    assert decision.arguments["mode"] == "history" and "race condition" in decision.arguments["query"]


def test_every_packaged_example_can_reach_its_threshold():
    from opensage.plugins.routing.routing import unreachable_examples

    assert unreachable_examples(load_routes()) == []
    raw = yaml.safe_load(PACKAGED_ROUTES.read_text())
    raw["routes"][0]["templates"].append("poll {job}")
    assert unreachable_examples(RoutesFile.model_validate(raw)) == [
        "route 'opensage_vertical': template 'poll {job}' can reach at most confidence 0.70, "
        "below confidence_threshold 0.78"]


# -- the threshold gates --------------------------------------------------------------------

def test_threshold_gates(project, host):
    text = "what exactly do we know about the retry policy"  # one unexpected word: below 1.0
    first = decide(host, text)
    assert first.route == "opensage_memory_query" and 0.78 <= first.confidence < 1.0
    write_user_routes(project, f"""
        routes:
          - name: opensage_memory_query
            confidence_threshold: {min(1.0, first.confidence + 0.01):.4f}
            probability_threshold: 1.0
    """)
    gated = decide(host, text)
    assert gated.route == "none" and gated.command is None
    # an exact phrasing still reaches the raised threshold
    assert decide(host, "what do we know about the retry policy").route == "opensage_memory_query"


def _router_with_threshold(route_name, threshold):
    raw = yaml.safe_load(PACKAGED_ROUTES.read_text())
    for route in raw["routes"]:
        if route["name"] == route_name:
            route["confidence_threshold"] = threshold
    return Router(RoutesFile.model_validate(raw), classifier=None)


@pytest.mark.parametrize("text", ["list tools", "show me the memory graph", "is job-abc123 done?"])
def test_threshold_gates_in_the_router_itself(text):
    """Without the classifier, confidence_threshold gates template decisions."""
    decision = Router(load_routes(), classifier=None).decide(text)
    assert decision.route != "none"
    at = _router_with_threshold(decision.route, decision.confidence).decide(text)
    assert at.route == decision.route                       # confidence == threshold: fires
    above = _router_with_threshold(decision.route, min(1.0, decision.confidence + 0.001))
    if decision.confidence < 1.0:
        gated = above.decide(text)
        assert gated.route == "none" and gated.command is None  # just below the threshold: does not fire
    zero = _router_with_threshold(decision.route, 0.0).decide("fix the failing test in test_auth.py")
    assert zero.route == "none"                              # threshold 0 still needs a matching example


def test_similarity_threshold_gates_meaning_matches():
    text = "save this knowledge: the importer skips rows without an id"
    decision = Router(load_routes(), classifier=None).decide(text)
    assert (decision.route, decision.how) == ("opensage_memory_store", "meaning")
    raw = yaml.safe_load(PACKAGED_ROUTES.read_text())
    for route in raw["routes"]:
        if route["name"] == "opensage_memory_store":
            route["similarity_threshold"] = round(decision.confidence + 0.001, 4)
    gated = Router(RoutesFile.model_validate(raw), classifier=None).decide(text)
    assert gated.route == "none" and gated.command is None


def _router_with_probability_threshold(route_name, threshold, **kwargs):
    raw = yaml.safe_load(PACKAGED_ROUTES.read_text())
    for route in raw["routes"]:
        if route["name"] == route_name:
            route["probability_threshold"] = threshold
    return Router(RoutesFile.model_validate(raw), **kwargs)


def test_probability_threshold_gates_classifier_decisions():
    """The calibrated threshold applies unless a route sets probability_threshold; at
    the decision's probability it fires, just above it does not."""
    text = "save this knowledge: the importer skips rows without an id"
    decision = Router(load_routes()).decide(text)
    assert (decision.route, decision.how) == ("opensage_memory_store", "classifier")
    assert decision.threshold == decision.probability_thresholds["opensage_memory_store"] <= decision.confidence
    assert dict(decision.probabilities)["opensage_memory_store"] == decision.confidence
    at = _router_with_probability_threshold("opensage_memory_store", int(decision.confidence * 10_000) / 10_000)
    assert at.decide(text).route == "opensage_memory_store"
    above = _router_with_probability_threshold("opensage_memory_store", min(1.0, decision.confidence + 0.001))
    gated = above.decide(text)
    assert gated.route == "none" and gated.command is None and gated.how == "none"


# -- user overrides ----------------------------------------------------------------------------

def test_user_override_adds_changes_and_disables_routes(project, host):
    assert decide(host, "make a tool that counts TODO comments").route == "opensage_tool"
    write_user_routes(project, """
        routes:
          - name: opensage_tool
            enabled: false
          - name: opensage_memory_query
            templates: ["any lore on {query}"]
          - name: release_notes
            description: Questions about past releases.
            command: "@memory-query"
            templates: ["what changed in release {version}"]
            arguments:
              query: {from: slot, slot: version, required: true}
            confidence_threshold: 0.8
    """)
    assert decide(host, "make a tool that counts TODO comments").route == "none"
    lore = decide(host, "any lore on the billing cron?")
    assert (lore.route, lore.arguments) == ("opensage_memory_query", {"query": "billing cron"})
    # the override replaced the templates: the packaged template no longer matches
    router, _ = router_for(host.workspace)
    assert router.decide("what do we know about the billing cron").how != "template"
    release = decide(host, "what changed in release 2.4")
    assert (release.route, release.command, release.arguments) == ("release_notes", "memory-query", {"query": "2.4"})


def test_user_word_class_extends_every_template_using_it(project, host):
    router, _ = router_for(host.workspace)
    assert router.decide("what do we know anent the billing cron").how != "template"
    write_user_routes(project, """
        words:
          about: [about, "on", regarding, anent]
    """)
    router, _ = router_for(host.workspace)
    decision = router.decide("what do we know anent the billing cron")
    assert (decision.route, decision.how, decision.arguments) == (
        "opensage_memory_query", "template", {"query": "billing cron"})


def test_user_route_with_plain_example_sentences_only(project, host):
    """A project's own route needs no template language: plain sentences route by
    meaning, and a slot argument is filled from the request."""
    write_user_routes(project, """
        routes:
          - name: release_history
            description: Questions about past releases.
            command: "@memory-query"
            examples:
              - "what changed in the last release"
              - "which features shipped in version two"
              - "show me the release history of the product"
              - "when did we release the new billing page"
            arguments:
              query: {from: slot, required: true}
            confidence_threshold: 0.8
            similarity_threshold: 0.45
    """)
    router, warning = router_for(host.workspace)
    assert warning is None
    decision = router.decide("which features shipped in the previous release?")
    assert (decision.route, decision.how) == ("release_history", "meaning")
    assert decision.arguments == {"query": "which features shipped in the previous release"}
    assert router.decide("rename getUser to fetchUser").route == "none"


def test_templates_written_under_examples_still_work(project, host):
    """Files written before 'templates' existed put templates under 'examples'."""
    write_user_routes(project, """
        routes:
          - name: deploy_notes
            description: Deployment questions.
            command: "@memory-query"
            examples: ["deploy notes on {query}", "how do deploys of (api|web) work"]
            arguments: {query: {from: slot}}
            confidence_threshold: 0.5
    """)
    route = load_routes(PACKAGED_ROUTES, project / ".opencode" / "intent-routes.yaml").routes[-1]
    assert route.examples == [] and route.templates == ["deploy notes on {query}", "how do deploys of (api|web) work"]


def test_override_is_picked_up_after_an_edit(project, workspace):
    router1, _ = router_for(workspace)
    assert router_for(workspace)[0] is router1  # cached
    write_user_routes(project, "routes:\n  - name: opensage_tool\n    enabled: false\n")
    router2, warning = router_for(workspace)
    assert router2 is not router1 and warning is None
    assert "opensage_tool" not in router2.routes


# -- invalid files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("body, expected", [
    ("routes:\n  - name: opensage_memory_query\n    confidence_threshold: 1.5\n",
     "route 'opensage_memory_query', field 'confidence_threshold'"),
    ("routes:\n  - name: opensage_tool\n    patterns: [{regex: '(unclosed', confidence: 0.9}]\n",
     "route 'opensage_tool', field 'patterns.0.regex': invalid regular expression"),
    ("routes:\n  - name: mine\n    description: x\n    command: memory-query\n    examples: [hi]\n"
     "    confidence_threshold: 0.5\n", "route 'mine', field 'command'"),
    ("routes:\n  - name: mine\n    description: x\n    command: '@memory-query'\n    examples: ['  ']\n"
     "    confidence_threshold: 0.5\n",
     "route 'mine', field 'examples': examples must be non-empty sentences"),
    ("routes:\n  - name: opensage_tool\n    threshold: 0.5\n", "route 'opensage_tool', field 'threshold': Extra inputs"),
    ("routes:\n  - name: x\n    description: [unclosed\n", "not valid YAML (line"),
    ("routes:\n  - name: opensage_tool\n    examples: ['<nope> a tool that {requirement}']\n",
     "route 'opensage_tool', field 'templates': example '<nope> a tool that {requirement}': unknown word class <nope>"),
    ("words:\n  about: [about, please]\n", "field 'words': word class 'about': 'please' is a filler word"),
])
def test_invalid_user_file_is_a_clear_error(project, body, expected):
    path = write_user_routes(project, body)
    with pytest.raises(ConfigError) as err:
        load_routes(PACKAGED_ROUTES, path)
    assert str(path) in str(err.value) and expected in str(err.value)


def test_invalid_user_file_keeps_packaged_routes_working(project, cli):
    write_user_routes(project, "routes:\n  - name: opensage_memory_query\n    confidence_threshold: 1.5\n")
    out = cli("route", "--json", "what do we know about the auth flow?")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"route": "opensage_memory_query", "confidence": 1.0,
                                      "command": "@memory-query", "arguments": {"query": "auth flow"}}
    assert "intent-routes.yaml: route 'opensage_memory_query', field 'confidence_threshold'" in out.stderr
    assert "using the packaged routes" in out.stderr


def test_invalid_packaged_file_raises(tmp_path):
    bad = tmp_path / "routes.yaml"
    bad.write_text("version: 2\nroutes: []\n")
    with pytest.raises(ConfigError, match="field 'version'"):
        load_routes(bad)


# -- the hook ------------------------------------------------------------------------------------

def test_another_plugin_overrides_route_intent(workspace):
    class Mine:
        @hookimpl
        def route_intent(self, session, text):
            if "lore" in text:
                return Route(route="lore", confidence=0.9, command="memory-query", arguments={"query": "lore"})
            return None

    host = Host(workspace, plugins=[Mine()])
    try:
        assert host.route("tell me some lore").route == "lore"          # the other plugin answers first
        fallback = host.route("what do we know about the auth flow?")   # it passes: the router answers
        assert fallback.route == "opensage_memory_query" and fallback.command == "memory-query"
    finally:
        host.close()


def test_format_call_round_trips_through_the_parser():
    from opensage.commands import parse_line

    args = {"task": 'say "hi"', "subtasks": ["a", "b"], "radius": 2}
    call = parse_line(format_call("@vertical-decompose", args))
    # bare values are strings until the command's model coerces them (as typed on the CLI)
    assert call.name == "vertical-decompose" and call.arguments == {**args, "radius": "2"}


# -- CLI and chat ----------------------------------------------------------------------------------

def test_cli_route_prints_the_decision(cli):
    out = cli("route", "break this migration into steps")
    assert out.returncode == 0, out.stderr
    assert "route       opensage_vertical" in out.stdout
    assert 'command     @vertical-decompose task="this migration"' in out.stdout
    none = cli("--json", "route", "rename getUser to fetchUser")
    decision = json.loads(none.stdout)
    assert (decision["route"], decision["command"], decision["arguments"]) == ("none", None, {})


def test_cli_route_explain_shows_nearest_examples_and_scores(cli):
    out = cli("route", "--explain", "save this knowledge: the importer skips rows without an id")
    assert out.returncode == 0, out.stderr
    assert "route       opensage_memory_store" in out.stdout
    assert "decided by  the learned classifier (threshold 0." in out.stdout
    lines = out.stdout.splitlines()
    start = lines.index("classifier (probability, threshold to fire; docs/routing.md):")
    top = lines[start + 1].split()
    assert top[1] == "opensage_memory_store" and float(top[0]) >= float(top[2]) > 0
    probs = [float(line.split()[0]) for line in lines[start + 1:start + 6]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0001
    start = lines.index("nearest examples (similarity: cosine + word overlap, see docs/routing.md):")
    nearest = lines[start + 1:start + 6]
    assert len(nearest) == 5 and any("opensage_memory_store" in line for line in nearest)
    scores = [float(line.split()[0]) for line in nearest]
    assert scores == sorted(scores, reverse=True)
    assert "route similarity (mean of the 3 nearest examples):" in out.stdout
    js = json.loads(cli("route", "--explain", "--json", "draw the graph around AuthService").stdout)
    assert (js["route"], js["how"], js["arguments"]) == ("opensage_memory_visualize", "template",
                                                         {"centerNode": "AuthService"})
    assert js["matched"] and len(js["nearest"]) == 5 and js["similarities"][0]["route"] == "opensage_memory_visualize"
    none = json.loads(cli("route", "--explain", "--json", "rename getUser to fetchUser").stdout)
    assert none["route"] == "none" and none["how"] == "none" and none["similarities"]
    assert none["probabilities"][0]["class"] == "none" and abs(sum(p["probability"] for p in none["probabilities"]) - 1) < 1e-3


class Spend:
    """A throwaway plugin: a command that 'calls a model', and a route to it."""

    def __init__(self):
        self.ran = []

    @hookimpl
    def register_commands(self, register):
        class Args(ArgModel):
            topic: str

        def handler(args, ctx):
            self.ran.append(args.topic)
            return CommandResult(text=f"researched {args.topic}")

        register(Command("deep-research", Args, handler, "Research a topic with a model.", uses_llm=True))

    @hookimpl(tryfirst=True)
    def route_intent(self, session, text):
        if text.startswith("research "):
            return Route(route="research", confidence=0.95, command="deep-research", arguments={"topic": text[9:]})
        return None


class Recorder:
    def __init__(self):
        self.events = []

    @hookimpl
    def session_event(self, session, event):
        self.events.append((event.kind, event.text))


def test_chat_routes_free_text_and_records_it(workspace):
    rec, spend = Recorder(), Spend()
    host = Host(workspace, plugins=[rec, spend])
    stdin = io.StringIO("remember that the staging db is read-only on weekends\n"
                        "what do we know about the staging db?\n"
                        "research vector databases\n"
                        "rename getUser to fetchUser\n")
    stdout = io.StringIO()
    from opensage.chat import run_chat

    run_chat(host, stdin=stdin, stdout=stdout)
    text = stdout.getvalue()
    assert '-> @memory-add-node type="concept" label="staging db is read-only on weekends"' in text
    assert "added n1 (concept) staging db is read-only on weekends" in text
    assert '-> @memory-query query="staging db"' in text
    assert "not run: @deep-research calls a model" in text and spend.ran == []
    assert "no OpenSage command for this: route none" in text
    kinds = [k for k, _ in rec.events]
    assert kinds == ["user_message", "tool_result", "user_message", "tool_result", "user_message", "user_message"]
    labels = [r[0] for r in host.db.conn.execute("SELECT label FROM nodes WHERE type='concept'")]
    assert "staging db is read-only on weekends" in labels
    host.close()


def test_chat_yes_runs_model_commands(workspace):
    spend = Spend()
    host = Host(workspace, plugins=[spend])
    from opensage.chat import run_chat

    stdout = io.StringIO()
    run_chat(host, stdin=io.StringIO("research vector databases\n"), stdout=stdout, assume_yes=True)
    assert spend.ran == ["vector databases"] and "researched vector databases" in stdout.getvalue()
    host.close()


def test_chat_cli_asks_nothing_on_piped_stdin(cli):
    out = cli("chat", input="create an agent that reviews PRs for SQL injection\n")
    assert out.returncode == 0, out.stderr
    assert '-> @generate-agent task="reviews PRs for SQL injection"' in out.stdout
    assert "not run: @generate-agent calls a model" in out.stdout


class TtyInput(io.StringIO):
    def isatty(self):
        return True


def test_chat_asks_before_model_commands_on_a_terminal(workspace):
    spend = Spend()
    host = Host(workspace, plugins=[spend])
    from opensage.chat import run_chat

    stdout = io.StringIO()
    run_chat(host, stdin=TtyInput("research vector databases\nn\nresearch graph databases\ny\n"), stdout=stdout)
    text = stdout.getvalue()
    assert text.count("@deep-research calls a model and may spend money. Run it? [y/N]") == 2
    assert "not run." in text and spend.ran == ["graph databases"]
    host.close()


# -- the optional model tie-break ------------------------------------------------------------

def _router_at_the_boundary(text, tiebreak=True):
    """A router whose probability threshold for the text's best route equals the
    classifier's probability: the decision sits in the uncertain band."""
    decision = Router(load_routes(), tiebreak=False).decide(text)
    assert decision.how == "classifier"
    threshold = int(decision.confidence * 10_000) / 10_000  # just at or below
    return _router_with_probability_threshold(decision.route, threshold, tiebreak=tiebreak), decision


def test_model_tiebreak_decides_the_uncertain_band_once_per_text(scripted):
    text = "save this knowledge: the importer skips rows without an id"
    router, plain = _router_at_the_boundary(text)
    scripted.add("none")
    first = router.decide(text)
    assert (first.route, first.command, first.how) == ("none", None, "none")
    prompt = scripted.requests[0]["messages"][-1]["content"]
    assert "opensage_memory_store:" in prompt and "none:" in prompt and text in prompt
    assert router.decide(text).route == "none" and len(scripted.requests) == 1  # cached
    scripted.add("opensage_memory_store")
    other = "save this knowledge: the exporter skips rows without a date"
    router, _ = _router_at_the_boundary(other)
    chosen = router.decide(other)
    assert (chosen.route, chosen.how) == ("opensage_memory_store", "model")
    assert chosen.arguments["content"] == "exporter skips rows without a date"


def test_model_tiebreak_failure_or_nonsense_keeps_the_offline_decision(scripted):
    text = "save this knowledge: the importer skips rows without an id"
    router, plain = _router_at_the_boundary(text)
    scripted.add("I think you should store it somewhere")
    kept = router.decide(text)
    assert (kept.route, kept.how) == (plain.route, "classifier")
    scripted.add({"error": "connection"})
    third = "save this knowledge: the importer skips rows without a name"
    router, _ = _router_at_the_boundary(third)
    again = router.decide(third)
    assert again.how in ("classifier", "none") and len(scripted.requests) == 2


def test_model_tiebreak_is_not_asked_outside_the_band_or_when_off(scripted):
    router = Router(load_routes(), tiebreak=True)
    assert router.decide("what do we know about the auth flow?").how == "template"
    assert router.decide("rename getUser to fetchUser").route == "none"
    off, _ = _router_at_the_boundary("save this knowledge: the importer skips rows without an id", tiebreak=False)
    assert off.decide("save this knowledge: the importer skips rows without an id").how == "classifier"
    assert scripted.requests == []


# -- the learned classifier -------------------------------------------------------------------

def _build_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "build_route_classifier.py"
    spec = importlib.util.spec_from_file_location("build_route_classifier", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_classifier_matches_the_routes_and_training_sets():
    """The weights are derived from intent-routes.yaml and the tuning sets only: any edit
    of an example or a training case without `python scripts/build_route_classifier.py`
    fails here (and at runtime the edited route would fall back to nearest examples)."""
    from opensage.plugins.routing.route_classifier import FOLDED, Classifier, examples_digest

    clf = Classifier()
    build = _build_script()
    assert clf.meta["data_hash"] == build.data_hash(), "stale: run python scripts/build_route_classifier.py"
    config = load_routes()
    assert clf.digests == {r.name: examples_digest(r.examples) for r in config.routes}
    assert set(clf.classes) == {FOLDED.get(r.name, r.name) for r in config.routes}
    assert set(clf.thresholds) == set(clf.classes) - {"none"}
    assert "routing_independent.yaml" not in build.TRAIN_FILES  # report-only sets are never trained on
    # fresh4 became a tuning set in round 2; fresh5 is the report-only set of round 2
    assert all(name.startswith("routing_") and "fresh5" not in name for name in build.TRAIN_FILES)


def test_classifier_probabilities_are_a_distribution_over_known_features():
    from opensage.plugins.routing.route_classifier import Classifier, features

    clf = Classifier()
    p = clf.probabilities("what do we know about the auth flow?")
    assert abs(sum(p.values()) - 1.0) < 1e-5 and max(p, key=p.get) == "opensage_memory_query"
    assert "w:know" in features("what do we know") and "b:^ what" in features("what do we know")
    assert "x:jobid" in features("is job-123abc done") and features("") == []
    # strings the vocabulary has never seen change nothing
    a, b = "qxqxq zxzxz", "zxzxzx qxqxqx"
    assert not any(f in clf.index for f in features(a) + features(b))
    assert clf.probabilities(a) == clf.probabilities(b) == clf.probabilities("")


def test_a_disabled_route_is_masked_from_the_classifier(project, host):
    text = "save this knowledge: the importer skips rows without an id"
    assert decide(host, text).route == "opensage_memory_store"
    write_user_routes(project, """
        routes:
          - name: opensage_memory_store
            enabled: false
    """)
    router, _ = router_for(host.workspace)
    decision = router.decide(text)
    assert decision.route != "opensage_memory_store"
    assert "opensage_memory_store" not in dict(decision.probabilities)
    assert abs(sum(p for _, p in decision.probabilities) - 1.0) < 1e-6


def test_a_route_whose_examples_a_project_replaced_is_decided_by_nearest_examples(project, host):
    """The shipped weights know the packaged examples only: a route given other examples
    leaves the classifier and competes by nearest examples (its class masked)."""
    write_user_routes(project, """
        routes:
          - name: opensage_memory_compress
            examples:
              - "fold this chat into the knowledge graph"
              - "squash the conversation into graph memory"
              - "fold the whole chat into memory before I leave"
            similarity_threshold: 0.45
    """)
    router, warning = router_for(host.workspace)
    assert warning is None
    decision = router.decide("fold this chat into the graph")
    assert (decision.route, decision.how) == ("opensage_memory_compress", "meaning")
    assert decision.command == "@memory-compress-session"
    assert "opensage_memory_compress" not in dict(decision.probabilities)
    assert router.decide("rename getUser to fetchUser").route == "none"
