"""Intent routing: free text -> an ``@``-command, driven by ``config/intent-routes.yaml``.

A user writes "what do we know about the auth flow?", not ``@memory-query``. The
router decides which OpenSage command (if any) the text asks for, how sure it is, and
fills the command's arguments from the text.

Configuration
    The packaged ``opensage/config/intent-routes.yaml`` is merged with the project's
    ``.opencode/intent-routes.yaml`` (a route with the same ``name`` overrides the
    packaged one field by field; a new name adds a route; ``enabled: false`` turns one
    off). Both are validated by the pydantic models below (:class:`RoutesFile`); an
    invalid file raises :class:`~opensage.errors.ConfigError` naming the file, the
    route and the field. ``docs/intent-routes-schema.md`` is generated from these models.

Matching (deterministic; a model is asked only by the opt-in tie-break)
    1. Patterns and templates (lexical): every ``templates`` phrasing is words plus
    ``{slot}`` slots, ``(a|b)`` one-word alternatives and ``<class>`` word classes, e.g.
    ``what do we know about {query}``. Text and templates are normalised the same way
    (lower case, apostrophes dropped, a few suffixes stripped) and split into whole
    words; each template word is compared with the text's words by
    :func:`rapidfuzz.fuzz.ratio` (typos tolerated, whole words only), and the template
    is aligned with the text in order:
    ``quality = (sum of matched word similarities - penalties) / number of template words``
    with :data:`GAP_COST` times the square of each gap's unexpected words (at most
    :data:`MAX_GAP`) and :data:`EDGE_COST` per word before or after (capped at
    :data:`EDGE_COST_CAP`); ``confidence = quality * min(1, 0.5 + 0.05 * letters)``.
    ``patterns`` give a fixed confidence. A pattern, or a template reaching its route's
    ``confidence_threshold``, decides when it fills the required arguments and beats the
    ``none`` route's templates — a template of a route the classifier knows only when
    the classifier gives that route at least :data:`LEXICAL_MIN_PROBABILITY`.

    2. The learned classifier (:mod:`opensage.plugins.routing.route_classifier`, weights built by
    ``scripts/build_route_classifier.py``): the most probable of the 13 classes (12
    commands, ``none``) fires when it is a route and reaches its calibrated
    probability threshold (or the route's ``probability_threshold``).

    3. Meaning, for routes the classifier does not know (a project's own, or a
    packaged one whose examples were replaced) and as the whole decision when no
    classifier is loaded: ``COSINE_WEIGHT`` x cosine of static sentence vectors
    (:mod:`opensage.plugins.routing.route_vectors`) + the rest x idf-weighted overlap of content words
    with each of the route's ``examples``; a route's similarity is the mean over its
    :data:`NEAREST_K` nearest; it fires when it reaches its ``similarity_threshold``,
    leads ``none`` by :data:`NONE_MARGIN` and is nearer than the classifier's route.
    docs/routing.md says where every threshold comes from.

Argument filling is described per route in the YAML (``arguments:``); see
:class:`ArgumentSpec` for the sources (slot text, a job id, a number near a keyword...).

Loaded routers are cached per (file, mtime) pair; a decision then costs about 0.5 ms
(median, after the first; ``python bench/routing.py`` measures it).
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from opensage.errors import ConfigError
from opensage.types import Route

__all__ = [
    "PACKAGED_ROUTES",
    "USER_ROUTES_FILE",
    "NONE_ROUTE",
    "ArgumentSpec",
    "PatternSpec",
    "RouteSpec",
    "RoutesFile",
    "Decision",
    "Router",
    "load_routes",
    "unreachable_examples",
    "router_for",
    "route_text",
    "format_call",
]

log = logging.getLogger("opensage.routing")

#: The packaged routes.
PACKAGED_ROUTES = Path(__file__).resolve().parents[2] / "config" / "intent-routes.yaml"
#: A project's overrides, relative to the workspace state dir (``.opencode/``).
USER_ROUTES_FILE = "intent-routes.yaml"
#: The name of the outcome "no OpenSage command fits".
NONE_ROUTE = "none"

#: Cost of unexpected words inside a template's phrase, in template-word units:
#: ``GAP_COST * n**2`` for ``n`` words in one gap (1 word: 0.3, 2 words: 1.2).
GAP_COST = 0.3
#: More unexpected words than this inside a phrase break the alignment.
MAX_GAP = 2
#: Cost of one word before or after the phrase when the template has no slot there.
EDGE_COST = 0.08
#: The edge cost is capped at this many template words.
EDGE_COST_CAP = 0.6

#: The similarity of a text to a route is the mean cosine of its ``NEAREST_K`` nearest
#: examples of that route (1 is plain nearest neighbour; 2 smooths over one odd example).
NEAREST_K = 3
#: An example's similarity to a text is ``COSINE_WEIGHT * cosine of their vectors +
#: (1 - COSINE_WEIGHT) * idf-weighted overlap of their content words`` (stems, filler
#: and stop words left out). 0.5: best top-1 accuracy on the tuning sets among
#: 1.0, 0.8, 0.7, 0.6, 0.5, 0.4 (71 %, 77 %, 79 %, 80 %, 81 %, 82 %; 0.5 kept for
#: the meaning side's sake). Measured with bench/calibrate_routing.py's data.
COSINE_WEIGHT = 0.5
#: Words left out of the overlap besides filler words.
_OVERLAP_STOP = frozenset(
    "to for of and or in on at by with from into that which who it is are be do what how".split())
#: A route fires by meaning only if its similarity beats the ``none`` route's by this
#: much (calibrated on the tuning sets by bench/routing.py --calibrate; docs/routing.md).
NONE_MARGIN = 0.04

#: With the classifier, a template match of a route it was trained on decides first (as
#: patterns and the templates of routes it does not know always do) only when the
#: classifier gives that route at least this probability: templates are precise on the
#: phrasings they were written for but fire wrongly on others. 0.2: best of 0, 0.05, 0.2
#: and "never" in grouped cross-validation on routing_fresh2/fresh3 (held out in turn;
#: 96.0 %/97.5 % against 95.0 %/95.5 % for 0 and 96.0 %/96.5 % for never).
LEXICAL_MIN_PROBABILITY = 0.2

#: The optional model tie-break (``OPENSAGE_ROUTE_TIEBREAK=1`` with ``OPENSAGE_MODEL``
#: set) is asked only when the meaning decision is this close to a boundary: the best
#: route's similarity within ``TIE_BAND`` of its threshold, or its lead over ``none``
#: within ``TIE_BAND`` of :data:`NONE_MARGIN`.
TIE_BAND = 0.06
#: Tie-break answers kept per router (least recently used dropped first).
TIE_CACHE_SIZE = 256
#: Bounds of one tie-break call: seconds and answer tokens; no retries.
TIE_TIMEOUT_S = 10.0
TIE_MAX_TOKENS = 16

#: Words that are free anywhere in the text and never required by a template.
FILLER = frozenset(
    """a an the my our your this these those some any all please pls plz kindly just
    me us i you we u ya can could would will shall might may hey hi hello ok okay so now
    also actually really quickly quick maybe perhaps guys thanks thank ty well um uh hmm
    like let lets go ahead right then new ever""".split()
)

_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*|:(?!\S)")
_SLOT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_COMMAND = re.compile(r"^@[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_ROUTE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_CLASS_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_TEMPLATE_SYNTAX = re.compile(r"\{[A-Za-z_]\w*\}|\([^()|]+\|[^()]*\)|<[a-z][a-z0-9_]*>")


# ----------------------------------------------------------------------------------
# Schema
# ----------------------------------------------------------------------------------

ArgSource = Literal[
    "slot", "text", "list", "label", "slug", "job_id", "identifier", "path", "number",
    "choice", "steps", "session", "value",
]


class ArgumentSpec(BaseModel):
    """How one command argument is filled from the text.

    ``from`` (required) is one of:

    * ``slot`` — the words a ``{slot}`` of the matched example (or a named group of the
      matched pattern) captured, without leading articles/possessives ("the", "our"),
      surrounding quotes, trailing punctuation and "please";
    * ``text`` — the whole message;
    * ``list`` — the slot split on commas, "or", "and", "vs", "/" (two items or more);
    * ``label`` — a short title (at most 8 words) made from the slot;
    * ``slug`` — a kebab-case name made from the slot's first content words;
    * ``job_id`` — a job id in the text: ``job-…``/``job_…``, a UUID, or 6+ hex digits (with a digit and a letter), or a word with a digit after "job"/"id" ("job 7f3d");
    * ``identifier`` — a quoted or back-ticked name, else a code-like word
      (``AuthService``, ``auth_service``, ``auth.py``); falls back to the slot;
    * ``path`` — a file or folder path in the text (``src/auth``, ``notes.md``), else the
      slot with "folder"/"directory" removed; "the repo"/"the project" give ``.``;
    * ``number`` — an integer next to one of ``keywords`` ("radius 3", "2 hops");
    * ``choice`` — the first key of ``choices`` whose words occur in the text;
    * ``steps`` — the text split into steps at "first/then/next/finally" or a numbered
      list (two steps or more);
    * ``session`` — the id of the current session;
    * ``value`` — the constant ``value``.

    :param slot: the slot name for slot/list/label/slug/identifier/path (default: the
        argument's own name).
    :param required: the route does not fire when this argument cannot be filled.
    :param default: used when the source finds nothing (omitted when null).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: ArgSource = Field(alias="from", description="where the value comes from (see the list above)")
    slot: str | None = Field(None, description="slot name for slot/list/label/slug/identifier/path; default: the argument name")
    value: Any = Field(None, description="the constant, for from: value")
    choices: dict[str, list[str]] = Field(default_factory=dict, description="for from: choice — value -> words that select it")
    keywords: list[str] = Field(default_factory=list, description="for from: number — words the number must stand next to")
    default: Any = Field(None, description="value used when nothing is found (omitted when null)")
    required: bool = Field(False, description="the route does not fire when this argument stays empty")

    @model_validator(mode="after")
    def _check(self) -> "ArgumentSpec":
        if self.source == "value" and self.value is None:
            raise ValueError("from: value needs a 'value'")
        if self.source == "choice" and not self.choices:
            raise ValueError("from: choice needs 'choices' (value -> list of words)")
        if self.source == "number" and not self.keywords:
            raise ValueError("from: number needs 'keywords' (words the number stands next to)")
        return self


class PatternSpec(BaseModel):
    """A regular expression (Python syntax, case-insensitive, searched in the original
    text) that selects the route with a fixed confidence; named groups fill slots."""

    model_config = ConfigDict(extra="forbid")

    regex: str = Field(description="Python regular expression; named groups (?P<name>...) fill slots")
    confidence: float = Field(ge=0.0, le=1.0, description="confidence given when the pattern matches")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return value


class RouteSpec(BaseModel):
    """One route: when free text should run an ``@``-command, and with which arguments."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="route name: lowercase letters, digits and '_' (e.g. opensage_memory_query)")
    description: str = Field(min_length=1, description="when this route applies (shown in docs and to the host's model)")
    command: str | None = Field(description="the @-command to run, e.g. '@memory-query'; null only for the 'none' route")
    examples: list[str] = Field(
        default_factory=list,
        description="natural example requests, plain sentences (matched by meaning: nearest neighbours in the "
                    "route-vector space)")
    templates: list[str] = Field(
        default_factory=list,
        description="optional phrasings with (a|b) alternatives, <class> word classes and {slot} slots: "
                    "lexical evidence and argument capture")
    patterns: list[PatternSpec] = Field(default_factory=list, description="regular expressions with a fixed confidence")
    arguments: dict[str, ArgumentSpec] = Field(default_factory=dict, description="command argument (camelCase) -> how to fill it")
    confidence_threshold: float = Field(ge=0.0, le=1.0, description="below this template/pattern confidence the lexical match does not fire")
    similarity_threshold: float = Field(
        0.4, ge=0.0, le=1.0,
        description="below this similarity to the route's examples (mean of the 3 nearest; see docs/routing.md) "
                    "it does not fire by meaning (routes the shipped classifier was not trained on)")
    probability_threshold: float | None = Field(
        None, ge=0.0, le=1.0,
        description="the classifier's probability this route needs to fire; default (null): the value calibrated "
                    "by scripts/build_route_classifier.py (see docs/routing.md)")
    enabled: bool = Field(True, description="false turns a packaged route off")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _ROUTE_NAME.match(value):
            raise ValueError(f"{value!r} is not a valid route name: use lowercase letters, digits and '_'")
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: str | None) -> str | None:
        if value is not None and not _COMMAND.match(value):
            raise ValueError(f"{value!r} is not an @-command: write it like '@memory-query'")
        return value

    @field_validator("templates")
    @classmethod
    def _templates(cls, value: list[str]) -> list[str]:
        for example in value:
            _compile_template(example, words=None)  # syntax; raises ValueError with the reason
        return value

    @field_validator("examples")
    @classmethod
    def _examples(cls, value: list[str]) -> list[str]:
        for example in value:
            if not isinstance(example, str) or not example.strip():
                raise ValueError("examples must be non-empty sentences")
            if len(example) > 400:
                raise ValueError(f"example {example[:40]!r}... is longer than 400 characters")
        return value

    @model_validator(mode="before")
    @classmethod
    def _templates_written_as_examples(cls, data: Any) -> Any:
        """Files written before ``templates`` existed listed templates under
        ``examples``: an example with ``{slot}``, ``(a|b)`` or ``<class>`` syntax is
        taken as a template (and is not an example sentence)."""
        if isinstance(data, dict) and isinstance(data.get("examples"), list):
            tpl = [e for e in data["examples"] if isinstance(e, str) and _TEMPLATE_SYNTAX.search(e)]
            if tpl:
                data = {**data, "examples": [e for e in data["examples"] if e not in tpl],
                        "templates": [*(data.get("templates") or []), *tpl]}
        return data

    @model_validator(mode="after")
    def _check(self) -> "RouteSpec":
        if self.name == NONE_ROUTE and self.command is not None:
            raise ValueError("the 'none' route must have command: null")
        if self.name != NONE_ROUTE and self.command is None:
            raise ValueError("command is required (e.g. '@memory-query'); only the 'none' route has none")
        if not self.examples and not self.templates and not self.patterns:
            raise ValueError("give at least one of 'examples', 'templates' or 'patterns'")
        # a slot no template or pattern captures is filled from the request itself
        # (see Router._fill: the text after "X:", else the whole request)
        return self


class RoutesFile(BaseModel):
    """The whole ``intent-routes.yaml``: ``version: 1`` and a list of ``routes``."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = Field(1, description="schema version, 1")
    words: dict[str, list[str]] = Field(
        default_factory=dict,
        description="word classes: name -> one-word alternatives, written <name> in examples",
    )
    routes: list[RouteSpec] = Field(description="the routes; names are unique")

    @field_validator("words")
    @classmethod
    def _words(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, words in value.items():
            if not _CLASS_NAME.match(name):
                raise ValueError(f"word class {name!r}: use lowercase letters, digits and '_'")
            if not words:
                raise ValueError(f"word class {name!r} is empty")
            for word in words:
                toks = _tokens(str(word))
                if len(toks) != 1:
                    raise ValueError(f"word class {name!r}: {word!r} must be one word")
                if toks[0].filler and toks[0].norm != ":":
                    raise ValueError(f"word class {name!r}: {word!r} is a filler word (ignored everywhere); remove it")
        return value

    @model_validator(mode="after")
    def _unique(self) -> "RoutesFile":
        seen = set()
        for route in self.routes:
            if route.name in seen:
                raise ValueError(f"route name {route.name!r} appears twice")
            seen.add(route.name)
            for example in route.templates:
                try:
                    _compile_template(example, words=self.words)
                except ValueError as exc:
                    raise ValueError(f"route '{route.name}', field 'templates': {exc}") from None
        return self


# ----------------------------------------------------------------------------------
# Loading and merging
# ----------------------------------------------------------------------------------

def _read_yaml(path: Path) -> dict:
    try:
        # libyaml's loader when PyYAML has it: 30x faster on the packaged file (6 ms, not 180)
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the routes file: {exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        raise ConfigError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with 'routes:' (got {type(raw).__name__}).")
    routes = raw.get("routes", [])
    if not isinstance(routes, list):
        raise ConfigError(f"{path}: 'routes' must be a list of routes, each with a 'name'.")
    for i, route in enumerate(routes):
        if not isinstance(route, dict) or not isinstance(route.get("name"), str):
            raise ConfigError(f"{path}: routes[{i}] must be a mapping with a 'name' (e.g. name: my_route).")
    return raw


def _merge(base: dict, override: dict) -> tuple[dict, dict[str, str]]:
    """Merge ``override``'s routes over ``base``'s: same name -> field-by-field override."""
    merged = {k: v for k, v in base.items() if k != "routes"}
    merged.update({k: v for k, v in override.items() if k not in ("routes", "words")})
    if "words" in override:
        base_words = base.get("words") or {}
        over_words = override.get("words") or {}
        if isinstance(base_words, dict) and isinstance(over_words, dict):
            merged["words"] = {**base_words, **over_words}  # a class of the same name is replaced
        else:
            merged["words"] = over_words
    routes = [dict(r) for r in base.get("routes", [])]
    index = {r["name"]: i for i, r in enumerate(routes)}
    touched: dict[str, str] = {}
    for route in override.get("routes", []):
        name = route["name"]
        touched[name] = "override"
        if name in index:
            routes[index[name]] = {**routes[index[name]], **route}
        else:
            index[name] = len(routes)
            routes.append(dict(route))
    merged["routes"] = routes
    return merged, touched


def _validate(raw: dict, origin: dict[str, Path]) -> RoutesFile:
    try:
        return RoutesFile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = list(err.get("loc") or ())
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        if len(loc) >= 2 and loc[0] == "routes" and isinstance(loc[1], int):
            route = raw["routes"][loc[1]]
            name = route.get("name", f"#{loc[1]}")
            path = origin.get(name, origin["*"])
            fields = ".".join(str(p) for p in loc[2:])
            where = f"route '{name}', field '{fields}'" if fields else f"route '{name}'"
            raise ConfigError(f"{path}: {where}: {msg}. See docs/intent-routes-schema.md.") from None
        named = re.match(r"route '([^']+)', ", msg)
        if not loc and named:
            path = origin.get(named.group(1), origin["*"])
            raise ConfigError(f"{path}: {msg}. See docs/intent-routes-schema.md.") from None
        fields = ".".join(str(p) for p in loc) or "(top level)"
        raise ConfigError(f"{origin['*']}: field '{fields}': {msg}. See docs/intent-routes-schema.md.") from None


def unreachable_examples(config: RoutesFile) -> list[str]:
    """Templates that can never fire: their best possible confidence (a perfect match,
    see the module docstring) is below their route's ``confidence_threshold``.

    :returns: one message per such example (empty when all can fire).
    """
    out = []
    for route in config.routes:
        for example in route.templates:
            ceiling = _compile_template(example, words=config.words).evidence
            if ceiling < route.confidence_threshold:
                out.append(f"route '{route.name}': template {example!r} can reach at most confidence "
                           f"{ceiling:.2f}, below confidence_threshold {route.confidence_threshold:g}")
    return out


def load_routes(packaged: Path = PACKAGED_ROUTES, user: Path | None = None) -> RoutesFile:
    """Load, merge and validate the routes.

    :param packaged: the base file (default: the packaged one).
    :param user: a project's override file, merged over ``packaged`` if it exists.
    :raises ConfigError: a file is not YAML or breaks the schema; the message names the
        file, the route and the field.
    """
    raw = _read_yaml(packaged)
    origin: dict[str, Any] = {"*": packaged}
    if user is not None and user.exists():
        over = _read_yaml(user)
        raw, touched = _merge(raw, over)
        origin.update({name: user for name in touched})
        if set(over) - {"routes"}:
            origin["*"] = user
    return _validate(raw, origin)


# ----------------------------------------------------------------------------------
# Text handling
# ----------------------------------------------------------------------------------

def _norm(word: str) -> str:
    """Lower-case, drop apostrophes, strip a few English suffixes (light stemming:
    ``decomposing``/``decompose`` -> ``decompos``, ``tools`` -> ``tool``); the stem keeps at
    least 4 letters. A ``:`` stays a token of its own (``remember: X``)."""
    w = unicodedata.normalize("NFKC", word).lower().replace("'", "").replace("’", "")
    if len(w) > 4 and w.endswith("ing") and len(w) - 3 >= 4:
        w = w[:-3]
    elif len(w) > 4 and w.endswith("ed") and len(w) - 2 >= 4:
        w = w[:-2]
    elif len(w) > 4 and w.endswith("es") and not w.endswith("sses") and len(w) - 2 >= 4:
        w = w[:-2]
    elif len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        w = w[:-1]
    if len(w) > 4 and w.endswith("e"):
        w = w[:-1]
    return w


@dataclass(frozen=True)
class _Tok:
    norm: str
    start: int
    end: int
    filler: bool


def _tokens(text: str) -> list[_Tok]:
    out = []
    for m in _TOKEN.finditer(text):
        raw = m.group()
        n = _norm(raw)
        low = raw.lower().replace("'", "").replace("’", "")
        out.append(_Tok(n, m.start(), m.end(), low in FILLER or n == ":"))
    return out


@dataclass(frozen=True)
class _Template:
    route: str
    source: str
    #: the template's words, each a tuple of alternatives: ``(make|create) a tool`` -> (("make","create"), ("tool",))
    literals: tuple[tuple[str, ...], ...]
    #: slot_before[i]: the slot name between literal i-1 and literal i (i == len: after the last)
    slot_before: tuple[str | None, ...]
    evidence: float


_TEMPLATE_PARTS = re.compile(r"(\{[^{}]*\}|\([^()]*\)|<[^<>]*>)")


def _compile_template(example: str, route: str = "", words: dict[str, list[str]] | None = None) -> _Template:
    """Compile ``(make|create) a <tool_word> that {requirement}``: words, ``(a|b)`` one-word
    alternatives (a group with a filler word, e.g. ``(the|our)``, is optional), ``<class>``
    for a word class of the file's ``words:``, ``{slot}`` slots.

    :param words: the word classes; ``None`` only checks the syntax (a class counts as
        one word).
    :raises ValueError: naming the problem.
    """
    literals: list[tuple[str, ...]] = []
    slot_before: list[str | None] = [None]
    for part in _TEMPLATE_PARTS.split(example):
        if part.startswith("<"):
            name = part[1:-1]
            if not _CLASS_NAME.match(name):
                raise ValueError(f"example {example!r}: a word class is written <name> (lowercase, digits, '_')")
            if words is None:
                literals.append((name,))
            elif name not in words:
                known = ", ".join(sorted(words)) or "none defined"
                raise ValueError(f"example {example!r}: unknown word class <{name}> (known: {known})")
            else:
                literals.append(tuple(dict.fromkeys(_norm(w) for w in words[name])))
            slot_before.append(None)
            continue
        if part.startswith("{"):
            m = _SLOT.fullmatch(part)
            if not m:
                raise ValueError(f"example {example!r}: a slot is written {{name}} (letters, digits, '_')")
            if slot_before[-1] is not None:
                raise ValueError(f"example {example!r}: two slots need words between them")
            slot_before[-1] = m.group(1)
            continue
        if part.startswith("("):
            alts = []
            optional = False
            for alt in part[1:-1].split("|"):
                toks = _tokens(alt)
                if len(toks) != 1:
                    raise ValueError(f"example {example!r}: each alternative in {part} must be one word")
                if toks[0].filler and toks[0].norm != ":":
                    optional = True  # a filler alternative makes the whole group optional
                else:
                    alts.append(toks[0].norm)
            if alts and not optional:
                literals.append(tuple(dict.fromkeys(alts)))
                slot_before.append(None)
            continue
        if re.search(r"[{}()|<>]", part):
            raise ValueError(f"example {example!r}: unbalanced braces or parentheses")
        for tok in _tokens(part):
            if tok.filler and tok.norm != ":":
                continue
            literals.append((tok.norm,))
            slot_before.append(None)
    if not literals:
        raise ValueError(f"example {example!r} has no words besides filler words and slots")
    letters = sum(sum(len(a) for a in alts) / len(alts) for alts in literals)
    return _Template(route, example, tuple(literals), tuple(slot_before), min(1.0, 0.5 + 0.05 * letters))


_LEADING = re.compile(r"^(?:(?:the|a|an|our|my|your|some|any|all|about|on|of|for)\s+)+", re.I)
_TRAILING = re.compile(r"(?:[\s,]+(?:please|pls|for me|thanks|thank you|ok|okay|now|again))+\s*$", re.I)


def _clean(text: str) -> str:
    s = text.strip().strip("\"'`“”‘’").strip()
    for _ in range(3):
        before = s
        s = s.rstrip(" ?.!,:;").lstrip(" :;,-–—").strip()
        s = _TRAILING.sub("", s)
        s = _LEADING.sub("", s)
        s = s.strip().strip("\"'`“”‘’").strip()
        if s == before:
            break
    return s


# ----------------------------------------------------------------------------------
# Argument extractors
# ----------------------------------------------------------------------------------

_JOB_ID = re.compile(
    r"\b(job[-_][A-Za-z0-9][A-Za-z0-9_-]*|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"|(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{6,})\b",
    re.I,
)
#: a job id the pattern above misses, named as one: "job 7f3d", "job id 61dd0e", "poll-async-job e02b7a"
_NAMED_JOB_ID = re.compile(r"\b(?:job|id)\s*[:#]?\s+(?=[A-Za-z_-]*\d)([A-Za-z0-9][A-Za-z0-9_-]{2,63})\b", re.I)
_QUOTED = re.compile(r"`([^`]+)`|\"([^\"]+)\"|“([^”]+)”|'([^']{2,})'")
_CODE_WORD = re.compile(
    r"\b([A-Z][a-z0-9]+[A-Z][A-Za-z0-9]*(?:\.[A-Za-z_]\w*)*|[a-z][a-z0-9]*_[a-z0-9_]+|[A-Za-z_]\w*\.[A-Za-z_]\w+(?:\.\w+)*)\b"
)
_PATH = re.compile(r"(?<![\w@])((?:\.{1,2}/|~/|/)?[\w.-]+(?:/[\w.-]+)+/?|[\w.-]*[A-Za-z][\w.-]*/(?=[\s,;:!?)]|$)|\.{1,2}/?|[\w-]+\.(?:py|md|txt|rst|ts|js|json|ya?ml|toml|go|rs|java|sql|sh))(?![\w/])")
_WHOLE_PROJECT = re.compile(r"^(?:whole |entire )?(?:repo|repository|project|codebase|code base|code)$", re.I)
_FOLDER_WORDS = re.compile(r"\s+(?:folder|directory|dir|tree)$", re.I)
_STEP_SPLIT = re.compile(
    r"(?:^|\n)\s*(?:\d+[.)]|[-*•])\s+"
    r"|(?:[.;,]\s*|\s+)(?:and\s+)?(?:then|next|after that|afterwards|finally|lastly|second(?:ly)?|third(?:ly)?)\b[,:]?\s*"
    r"|^\s*(?:first(?:ly)?|step one)\b[,:]?\s*"
    r"|\s\(?\d\)\s*",
    re.I,
)
_NAMED_FOLDER = re.compile(r"\b(?:the\s+)?([\w.-]+)\s+(?:folder|directory|dir|package|module)\b", re.I)
_WHOLE_PROJECT_IN_TEXT = re.compile(
    r"\b(?:whole|entire|this|our|the)\s+(?:repo|repository|project|codebase|code base)\b", re.I)
_BODY = re.compile(r"^\s*[^:\n]{1,60}?(?::|\s[-–—]+)\s+(\S.*)$", re.S)
_LIST_SPLIT = re.compile(r"\s*(?:,|/|;|\bvs\.?\s|\bversus\b|\bor\b|\band\b)\s*", re.I)
_STOP = frozenset("a an the to for of and or in on at by with from into that which who this it is are be".split())


def _label(text: str) -> str:
    s = _clean(text)
    if ":" in s and len(s.split(":", 1)[0].split()) <= 8:
        s = s.split(":", 1)[0]
    s = re.split(r"[.;!?]\s|,\s|\s(?:because|since|so that|which|as)\s|\s[-–—]\s", s, maxsplit=1)[0]
    words = s.split()
    return " ".join(words[:8]).rstrip(",.;:") if words else ""


def _slug(text: str) -> str:
    words = [w for w in re.findall(r"[a-z0-9]+", _clean(text).lower()) if w not in _STOP]
    return "-".join(words[:4])[:64].strip("-")


def _split_list(text: str) -> list[str]:
    items = [_clean(p) for p in _LIST_SPLIT.split(text)]
    items = [i for i in items if i]
    return items if len(items) >= 2 else []


def split_steps(text: str) -> list[str]:
    """Split "first A, then B, finally C" or a numbered/bulleted list into steps.

    :returns: the steps (cleaned), or ``[]`` when fewer than two are found.
    """
    pieces = [_clean(p) for p in _STEP_SPLIT.split(text.strip())]
    pieces = [re.sub(r"^(?:and|then|to)\s+", "", p, flags=re.I) for p in pieces if p]
    pieces = [p for p in pieces if p and len(p) > 2]
    return pieces if len(pieces) >= 2 else []


def _content_words(text: str) -> frozenset[str]:
    """The normalised content words of ``text`` (filler and stop words left out)."""
    return frozenset(t.norm for t in _tokens(text[:2000])
                     if not t.filler and t.norm != ":" and t.norm not in _OVERLAP_STOP)


def request_body(text: str) -> str:
    """The part of a request that is its subject, for a route matched by meaning:
    the text after a short lead-in ending in ``:`` or `` - `` ("note for the future -
    X" -> "X"), else the whole request; cleaned like a slot.

    :param text: the request.
    :returns: the cleaned body ("" for empty text).
    """
    m = _BODY.match(text)
    body = m.group(1) if m and len(m.group(1).split()) >= 2 else text
    return _clean(body)


def _number_near(tokens: list[_Tok], keywords: set[str]) -> int | None:
    for i, tok in enumerate(tokens):
        if tok.norm.isdigit():
            window = tokens[max(0, i - 3): i] + tokens[i + 1: i + 3]
            if any(t.norm in keywords for t in window):
                return int(tok.norm)
    return None


# ----------------------------------------------------------------------------------
# The router
# ----------------------------------------------------------------------------------

@dataclass
class Decision:
    """A routing decision with its explanation.

    :param route: the route name, ``none`` when nothing should fire.
    :param confidence: in [0, 1]; for ``none``, 1 minus the best route's confidence.
    :param command: the ``@``-command (with ``@``) or ``None``.
    :param arguments: arguments filled from the text (camelCase names).
    :param matched: the example or pattern that decided, if any.
    :param threshold: the route's ``confidence_threshold`` (``None`` for ``none``).
    :param candidates: the best (route, confidence) pairs considered, best first.
    :param how: what decided: ``classifier`` (the learned classifier), ``template``,
        ``pattern`` (lexical, without a classifier), ``meaning`` (nearest examples),
        ``model`` (the optional tie-break in the uncertain band) or ``none``.
    :param similarities: route -> similarity to its examples (mean cosine of the
        :data:`NEAREST_K` nearest), best first; empty without route vectors.
    :param nearest: the nearest example sentences as (route, example, similarity), best first.
    :param probabilities: the classifier's (class, probability) pairs, best first; a class
        is a route name (``opensage_memory_query`` stands for the history route too) or
        ``none``; empty without the classifier.
    :param probability_thresholds: class -> the probability it needs to fire.
    """

    route: str
    confidence: float
    command: str | None
    arguments: dict[str, Any] = field(default_factory=dict)
    matched: str | None = None
    threshold: float | None = None
    candidates: list[tuple[str, float]] = field(default_factory=list)
    how: str = "none"
    similarities: list[tuple[str, float]] = field(default_factory=list)
    nearest: list[tuple[str, str, float]] = field(default_factory=list)
    probabilities: list[tuple[str, float]] = field(default_factory=list)
    probability_thresholds: dict[str, float] = field(default_factory=dict)

    def to_route(self) -> Route:
        """As the hook's :class:`opensage.types.Route` (command without ``@``)."""
        return Route(route=self.route, confidence=round(self.confidence, 4),
                     command=self.command.lstrip("@") if self.command else None, arguments=self.arguments)

    def as_json(self) -> dict[str, Any]:
        """``{"route", "confidence", "command", "arguments"}``; command with ``@`` or null."""
        return {"route": self.route, "confidence": round(self.confidence, 4), "command": self.command,
                "arguments": self.arguments}

    def explain(self) -> dict[str, Any]:
        """:meth:`as_json` plus why: ``how``, ``matched``, ``threshold``, the lexical
        ``candidates``, per-route ``similarities`` and the ``nearest`` examples."""
        out = self.as_json()
        out.update({
            "how": self.how, "matched": self.matched, "threshold": self.threshold,
            "candidates": [{"route": r, "confidence": c} for r, c in self.candidates],
            "similarities": [{"route": r, "similarity": round(v, 4)} for r, v in self.similarities],
            "nearest": [{"route": r, "example": e, "similarity": round(v, 4)} for r, e, v in self.nearest],
            "probabilities": [{"class": c, "probability": round(p, 4)} for c, p in self.probabilities],
            "probability_thresholds": dict(self.probability_thresholds),
        })
        return out


@dataclass
class _Match:
    route: str
    confidence: float
    source: str
    slots: dict[str, str]
    #: template words matched against (ties in confidence go to the more specific template)
    specificity: int = 0


class Router:
    """Decide routes over a validated :class:`RoutesFile` (build once, reuse).

    :param config: the routes. Templates are compiled and the vocabulary indexed here,
        so :meth:`decide` only aligns text.
    """

    def __init__(self, config: RoutesFile, tiebreak: bool | None = None, classifier: Any = "packaged") -> None:
        self.config = config
        #: the learned classifier: "packaged" loads opensage/config/route-classifier.npz on
        #: first use; a :class:`opensage.plugins.routing.route_classifier.Classifier` uses that one; ``None``
        #: decides by nearest examples only (the router before the classifier)
        self._clf_setting = classifier
        self._clf_state: tuple | None = None
        self._clf_ready = False
        #: ask the model in the uncertain band (default: ``OPENSAGE_ROUTE_TIEBREAK=1`` and
        #: ``OPENSAGE_MODEL`` set, read per decision)
        self._tiebreak_setting = tiebreak
        self.routes = {r.name: r for r in config.routes if r.enabled}
        self.templates: list[_Template] = []
        self.patterns: list[tuple[str, re.Pattern, float, str]] = []
        for route in self.routes.values():
            for example in route.templates:
                self.templates.append(_compile_template(example, route.name, config.words))
            for p in route.patterns:
                self.patterns.append((route.name, re.compile(p.regex, re.I | re.S), p.confidence, p.regex))
        self.vocab = sorted({w for t in self.templates for alts in t.literals for w in alts})
        #: word -> [(template index, literal index)] for the upper bounds in _match_all
        self._index: dict[str, list[tuple[int, int]]] = {}
        for ti, tpl in enumerate(self.templates):
            for gi, alts in enumerate(tpl.literals):
                for w in alts:
                    self._index.setdefault(w, []).append((ti, gi))
        self._vocab_set = frozenset(self.vocab)
        self._long_vocab = [w for w in self.vocab if len(w) >= 4]
        self._sim_cache: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()
        #: (route, example sentence) pairs, embedded on first use (see _semantic_index)
        self.examples: list[tuple[str, str]] = [(r.name, e) for r in self.routes.values() for e in r.examples]
        self._sem: tuple | None = None
        self._sem_ready = False
        self._tie_cache: dict[tuple, str | None] = {}

    # -- optional model tie-break ---------------------------------------------------
    @property
    def tiebreak(self) -> bool:
        """Whether the model tie-break is on (see :data:`TIE_BAND`)."""
        if self._tiebreak_setting is not None:
            return self._tiebreak_setting
        import os

        return os.environ.get("OPENSAGE_ROUTE_TIEBREAK") == "1" and bool(os.environ.get("OPENSAGE_MODEL"))

    def _tiebreak(self, text: str, options: list[str]) -> str | None:
        """Ask the configured model which of ``options`` (route names, ``none``
        included) fits ``text``: one call through :mod:`opensage.llm`, at most
        :data:`TIE_MAX_TOKENS` tokens, :data:`TIE_TIMEOUT_S` s, no retries; answers are
        cached per (text, options).

        :returns: the chosen route name, or ``None`` when the model failed or answered
            something that is not one of ``options`` (the caller keeps its decision).
        """
        key = (text, tuple(options))
        if key in self._tie_cache:
            answer = self._tie_cache.pop(key)
            self._tie_cache[key] = answer
            return answer
        from opensage import llm
        from opensage.errors import OpenSageError

        lines = [f"- {name}: {' '.join(self.routes[name].description.split())}" for name in options]
        messages = [
            {"role": "system", "content": "You decide which command, if any, a coding assistant's user asks for. "
                                          "Answer with exactly one of the listed names and nothing else."},
            {"role": "user", "content": "Names:\n" + "\n".join(lines) + f"\n\nRequest: {text[:500]}"},
        ]
        try:
            reply = llm.complete(messages, temperature=0, max_tokens=TIE_MAX_TOKENS, timeout_s=TIE_TIMEOUT_S,
                                 retries=0).content
        except OpenSageError as exc:
            log.info("routing tie-break failed: %s", exc)
            return None  # not cached: a passing failure may not repeat
        words = re.findall(r"[a-z][a-z0-9_]*", (reply or "").lower())
        answer = next((w for w in words if w in options), None)
        with self._lock:
            if len(self._tie_cache) >= TIE_CACHE_SIZE:
                self._tie_cache.pop(next(iter(self._tie_cache)))
            self._tie_cache[key] = answer
        return answer

    # -- the learned classifier -------------------------------------------------------
    def _classifier(self):
        """``(classifier, {class: [enabled route names]})`` or ``None`` (no classifier file,
        or ``classifier=None``). A route belongs to its class only while its examples are
        the ones the weights were trained on (per-route digest); a route the classifier
        does not know — a project's own, or a packaged one whose examples a project
        replaced — is decided by nearest examples instead, and its class is masked."""
        if self._clf_ready:
            return self._clf_state
        with self._lock:
            if not self._clf_ready:
                from opensage.plugins.routing import route_classifier as rc

                clf = rc.classifier() if self._clf_setting == "packaged" else self._clf_setting
                state = None
                if clf is not None and NONE_ROUTE in clf.classes:
                    members: dict[str, list[str]] = {}
                    for name, route in self.routes.items():
                        cls = rc.FOLDED.get(name, name)
                        if name == NONE_ROUTE or (
                                cls in clf.classes and clf.digests.get(name) == rc.examples_digest(route.examples)):
                            members.setdefault(cls, []).append(name)
                    members.setdefault(NONE_ROUTE, [NONE_ROUTE])
                    state = (clf, members)
                self._clf_state = state
                self._clf_ready = True
        return self._clf_state

    def probabilities(self, text: str, vector=None) -> list[tuple[str, float]]:
        """The classifier's probability of each class that has an enabled route, best
        first (renormalised over those classes); ``[]`` without a classifier.

        :param vector: the text's static sentence vector, if already computed.
        """
        state = self._classifier()
        if state is None:
            return []
        clf, members = state
        if vector is None:
            from opensage.plugins.routing.route_vectors import encoder

            enc = encoder()
            vector = enc.embed(text) if enc is not None else None
        probs = {c: p for c, p in clf.probabilities(text, vector).items() if c in members}
        total = sum(probs.values()) or 1.0
        return sorted(((c, p / total) for c, p in probs.items()), key=lambda kv: -kv[1])

    def probability_threshold(self, cls: str) -> float:
        """The probability a class needs to fire: its route's ``probability_threshold``
        when set, else the calibrated value shipped with the classifier."""
        state = self._classifier()
        members = state[1].get(cls, []) if state else []
        for name in members:
            if self.routes[name].probability_threshold is not None:
                return self.routes[name].probability_threshold
        return state[0].thresholds.get(cls, 0.5) if state else 1.0

    # -- meaning --------------------------------------------------------------------
    def _semantic_index(self):
        """``(encoder, example matrix, {route: row indices})`` or ``None`` without route
        vectors or examples. Built once, on the first decision (about 5 ms per 100
        examples)."""
        if self._sem_ready:
            return self._sem
        with self._lock:
            if not self._sem_ready:
                from opensage.plugins.routing.route_vectors import encoder

                enc = encoder()
                if enc is not None and self.examples:
                    import numpy as np

                    matrix = enc.embed_many([e for _, e in self.examples])
                    rows: dict[str, list[int]] = {}
                    for i, (route, _) in enumerate(self.examples):
                        rows.setdefault(route, []).append(i)
                    # idf-weighted bag of content words per example: word -> [(example, idf^2)]
                    bags = [_content_words(e) for _, e in self.examples]
                    df: dict[str, int] = {}
                    for bag in bags:
                        for w in bag:
                            df[w] = df.get(w, 0) + 1
                    n = len(bags)
                    idf = {w: math.log(1 + n / (1 + c)) for w, c in df.items()}
                    postings: dict[str, list[int]] = {}
                    for i, bag in enumerate(bags):
                        for w in bag:
                            postings.setdefault(w, []).append(i)
                    norms = np.array([math.sqrt(sum(idf[w] ** 2 for w in bag)) or 1.0 for bag in bags])
                    self._sem = (enc, matrix, {r: np.array(ix) for r, ix in rows.items()},
                                 idf, {w: np.array(ix) for w, ix in postings.items()}, norms,
                                 math.log(1 + n))
                self._sem_ready = True
        return self._sem

    def similarities(self, text: str, nearest: int = 0, vector=None) -> tuple[dict[str, float], list[tuple[str, str, float]]]:
        """How close ``text`` is in meaning to each route's examples.

        :param text: the request.
        :param nearest: also return this many nearest examples.
        :param vector: the text's static sentence vector, if already computed.
        :returns: ``({route: mean cosine of its NEAREST_K nearest examples}, [(route,
            example, cosine), ...])``; both empty without route vectors.
        """
        sem = self._semantic_index()
        if sem is None:
            return {}, []
        import numpy as np

        enc, matrix, rows, idf, postings, norms, unseen_idf = sem
        v = enc.embed(text) if vector is None else vector
        sims = matrix @ v
        bag = _content_words(text)
        if bag:
            overlap = np.zeros(len(self.examples))
            for w in bag:
                ix = postings.get(w)
                if ix is not None:
                    overlap[ix] += idf[w] ** 2
            qnorm = math.sqrt(sum(idf.get(w, unseen_idf) ** 2 for w in bag))
            sims = COSINE_WEIGHT * sims + (1 - COSINE_WEIGHT) * overlap / (norms * qnorm)
        else:
            sims = COSINE_WEIGHT * sims
        scores = {}
        for route, ix in rows.items():
            s = sims[ix]
            k = min(NEAREST_K, len(s))
            scores[route] = float(np.partition(s, len(s) - k)[len(s) - k:].mean())
        near = []
        if nearest:
            for i in np.argsort(-sims)[:nearest]:
                near.append((self.examples[i][0], self.examples[i][1], float(sims[i])))
        return scores, near

    # -- word similarity ----------------------------------------------------------
    def _hits(self, word: str) -> dict[str, float]:
        """Template words similar to ``word``: {literal: similarity in (0, 1]}."""
        cached = self._sim_cache.get(word)
        if cached is not None:
            return cached
        from rapidfuzz import fuzz, process

        hits: dict[str, float] = {}
        if word in self._vocab_set:
            hits[word] = 1.0
        if len(word) >= 3:
            for lit, score, _ in process.extract(word, self._long_vocab, scorer=fuzz.ratio, score_cutoff=75, limit=None):
                # typos keep the first letter and the length (+-2): "redeploy" is not "deploy"
                if lit == word or lit[0] != word[0] or abs(len(lit) - len(word)) > 2:
                    continue
                # a 3-letter word may only be a 4+-letter word with one letter missing ("knw")
                floor = 85 if len(word) == 3 else 75 if len(lit) <= 5 else 80
                if score >= floor:
                    hits[lit] = score / 100.0
        with self._lock:
            if len(self._sim_cache) > 20_000:
                self._sim_cache.clear()
            self._sim_cache[word] = hits
        return hits

    # -- alignment ----------------------------------------------------------------
    def _align(self, tpl: _Template, toks: list[_Tok], positions: dict[str, list[tuple[int, float]]],
               prefix: list[int]) -> tuple[float, tuple[int | None, ...]] | None:
        n, k = len(toks), len(tpl.literals)
        cands = []
        for alts in tpl.literals:
            if len(alts) == 1:
                cands.append(positions.get(alts[0], ()))
            else:
                merged: dict[int, float] = {}
                for alt in alts:
                    for p, s in positions.get(alt, ()):
                        merged[p] = max(s, merged.get(p, 0.0))
                cands.append(sorted(merged.items()))
        memo: dict[tuple[int, int, bool], tuple[float, tuple[int | None, ...]]] = {}
        NEG = (-1e9, ())

        def nonfiller(a: int, b: int) -> int:  # tokens a..b-1
            return prefix[b] - prefix[a] if b > a else 0

        def best(i: int, last: int, pending: bool) -> tuple[float, tuple[int | None, ...]]:
            key = (i, last, pending)
            if key in memo:
                return memo[key]
            if i == k:
                pend = pending or tpl.slot_before[k] is not None
                if last < 0:
                    res = NEG
                elif pend:
                    res = (0.0, ()) if last <= n - 2 else NEG
                else:
                    res = (-min(EDGE_COST_CAP, EDGE_COST * nonfiller(last + 1, n)), ())
                memo[key] = res
                return res
            nxt_pending = tpl.slot_before[i + 1] is not None
            sub = best(i + 1, last, pending or nxt_pending)
            res = (sub[0], (None, *sub[1])) if sub[0] > -1e8 else NEG
            for p, s in cands[i]:
                if p <= last:
                    continue
                if last < 0:
                    if pending:
                        if p < 1:
                            continue
                        cost = 0.0
                    else:
                        cost = min(EDGE_COST_CAP, EDGE_COST * nonfiller(0, p))
                else:
                    if pending:
                        if p - last < 2:
                            continue
                        cost = 0.0
                    else:
                        gap = nonfiller(last + 1, p)
                        if gap > MAX_GAP:
                            continue
                        cost = GAP_COST * gap * gap  # one stray word is cheap, two are a different phrase
                sub = best(i + 1, p, nxt_pending)
                if sub[0] <= -1e8:
                    continue
                value = s - cost + sub[0]
                if value > res[0]:
                    res = (value, (p, *sub[1]))
            memo[key] = res
            return res

        score, pos = best(0, -1, tpl.slot_before[0] is not None)
        if score <= -1e8:
            return None
        return score / k, pos

    def _slots(self, tpl: _Template, pos: tuple[int | None, ...], toks: list[_Tok], text: str) -> dict[str, str]:
        """The text each slot captured: the tokens between the matched words around it."""
        spans: dict[str, tuple[int, int]] = {}
        k = len(tpl.literals)
        for i in range(k + 1):
            name = tpl.slot_before[i]
            if name is None:
                continue
            prev = next((pos[j] for j in range(i - 1, -1, -1) if pos[j] is not None), -1)
            nxt = next((pos[j] for j in range(i, k) if pos[j] is not None), len(toks))
            span = (prev + 1, nxt - 1)
            if span[0] <= span[1] and span not in spans.values():
                spans[name] = span
        return {name: text[toks[a].start:toks[b].end] for name, (a, b) in spans.items()}

    def _match_all(self, text: str) -> dict[str, list[_Match]]:
        toks = _tokens(text)
        prefix = [0]
        for t in toks:
            prefix.append(prefix[-1] + (0 if t.filler else 1))
        positions: dict[str, list[tuple[int, float]]] = {}
        for i, t in enumerate(toks):
            if t.filler and t.norm != ":":
                continue
            for lit, s in self._hits(t.norm).items():
                positions.setdefault(lit, []).append((i, s))
        # upper bound per template: every literal at its best similarity, no penalties;
        # only templates sharing a word with the text are looked at
        group_best: dict[int, dict[int, float]] = {}
        for word, hits in positions.items():
            top = max(s for _, s in hits)
            for ti, gi in self._index.get(word, ()):
                groups = group_best.setdefault(ti, {})
                if top > groups.get(gi, 0.0):
                    groups[gi] = top
        found: dict[str, list[_Match]] = {}
        for ti, groups in group_best.items():
            tpl = self.templates[ti]
            ub = sum(groups.values()) / len(tpl.literals) * tpl.evidence
            threshold = self.routes[tpl.route].confidence_threshold
            if ub < threshold * 0.9:
                continue
            aligned = self._align(tpl, toks, positions, prefix)
            if aligned is None:
                continue
            quality, pos = aligned
            conf = max(0.0, min(1.0, quality * tpl.evidence))
            found.setdefault(tpl.route, []).append(
                _Match(tpl.route, conf, tpl.source, self._slots(tpl, pos, toks, text), len(tpl.literals)))
        for route, rx, conf, src in self.patterns:
            m = rx.search(text)
            if m:
                slots = {k: v for k, v in m.groupdict().items() if v}
                found.setdefault(route, []).append(_Match(route, conf, f"/{src}/", slots, 0))
        for matches in found.values():
            matches.sort(key=lambda m: (-m.confidence, -m.specificity))
        return found

    # -- arguments ----------------------------------------------------------------
    def _fill(self, route: RouteSpec, match: _Match, text: str, session_id: str | None) -> dict[str, Any] | None:
        args: dict[str, Any] = {}
        toks = None
        for name, spec in route.arguments.items():
            slot_text = match.slots.get(spec.slot or name)
            value: Any = None
            src = spec.source
            if src == "slot":
                value = _clean(slot_text) if slot_text else None
            elif src == "text":
                value = text.strip() or None
            elif src == "list":
                value = _split_list(slot_text) if slot_text else None
            elif src == "label":
                value = _label(slot_text) if slot_text else None
            elif src == "slug":
                value = _slug(slot_text) if slot_text else None
            elif src == "job_id":
                m = _JOB_ID.search(text) or _NAMED_JOB_ID.search(text)
                value = m.group(1) if m else None
            elif src == "identifier":
                m = _QUOTED.search(text)
                if m:
                    value = next(g for g in m.groups() if g)
                else:
                    scope = slot_text or text
                    m = _CODE_WORD.search(scope)
                    value = m.group(1) if m else (_clean(slot_text) if slot_text else None)
            elif src == "path":
                m = _QUOTED.search(text)
                if m:
                    value = next(g for g in m.groups() if g)
                else:
                    m = _PATH.search(slot_text or text)
                    named = _NAMED_FOLDER.search(slot_text or text)
                    if m:
                        value = m.group(1)
                    elif named and named.group(1).lower() not in ("the", "this", "that", "our", "my", "a"):
                        value = named.group(1)  # "the services directory" -> services
                    elif slot_text:
                        cleaned = _FOLDER_WORDS.sub("", _clean(slot_text))
                        value = "." if _WHOLE_PROJECT.match(cleaned) else (cleaned or None)
                    elif _WHOLE_PROJECT_IN_TEXT.search(text):
                        value = "."
            elif src == "number":
                toks = toks if toks is not None else _tokens(text)
                value = _number_near(toks, {_norm(k) for k in spec.keywords})
            elif src == "choice":
                toks = toks if toks is not None else _tokens(text)
                words = {t.norm for t in toks}
                low = " ".join(t.norm for t in toks)
                for key, triggers in spec.choices.items():
                    if any((_norm(w) in words) if " " not in w else
                           re.search(r"\b" + re.escape(" ".join(_norm(x) for x in w.split())) + r"\b", low)
                           for w in triggers):
                        value = key
                        break
            elif src == "steps":
                value = split_steps(text) or None
            elif src == "session":
                value = session_id
            elif src == "value":
                value = spec.value
            if value in (None, "", []) and (src == "slug" or src in ("slot", "label") and not match.source):
                body = request_body(text)  # matched by meaning: the request is the argument
                value = {"slot": body, "label": _label(body), "slug": _slug(body)}[src] or None
            if value in (None, "", []):
                value = spec.default
            if value in (None, "", []):
                if spec.required:
                    return None
                continue
            args[name] = value
        return args

    # -- decision -----------------------------------------------------------------
    def decide(self, text: str, session_id: str | None = None, explain: bool = False) -> Decision:
        """Route ``text``.

        With the shipped classifier (the default):

        1. the classifier's most probable class fires when it is a route and its
           probability reaches the route's threshold (:meth:`probability_threshold`);
           ``opensage_memory_query`` and ``opensage_memory_history`` share a class and
           the nearer examples (or a template of the history route) pick between them;
        2. a route the classifier was not trained on (a project's own) fires instead
           when it passes its nearest-example test (``similarity_threshold``, a lead of
           :data:`NONE_MARGIN` over the ``none`` examples) and is nearer in meaning
           than the classifier's route;
        3. arguments come from the route's best template match when one captured the
           slots, else from the request itself; a route whose required arguments stay
           empty does not fire.

        Without a classifier (``classifier=None`` or no weights file) the router of
        before decides: templates and patterns first (``confidence_threshold``), then
        nearest examples (``similarity_threshold`` and :data:`NONE_MARGIN`).

        :param text: what the user wrote (any length; only the first 2,000 characters
            are matched).
        :param session_id: fills ``from: session`` arguments.
        :param explain: also fill ``nearest`` (the 5 nearest examples).
        :returns: a :class:`Decision`; ``route == "none"`` and ``command is None`` when
            no route fires.
        """
        text = (text or "")[:2000]
        found = self._match_all(text)
        ranked = sorted(found.values(), key=lambda ms: (-ms[0].confidence, -ms[0].specificity))
        candidates = [(ms[0].route, round(ms[0].confidence, 4)) for ms in ranked[:4]]
        state = self._classifier()
        vector = None
        if state is not None:
            from opensage.plugins.routing.route_vectors import encoder

            enc = encoder()
            vector = enc.embed(text) if enc is not None else None
        sims, near = self.similarities(text, nearest=5 if explain else 0, vector=vector)
        sim_list = sorted(sims.items(), key=lambda kv: -kv[1])
        probs = self.probabilities(text, vector) if state is not None else []
        extra = {"candidates": candidates, "similarities": sim_list, "nearest": near, "probabilities": probs,
                 "probability_thresholds": {c: self.probability_threshold(c) for c, _ in probs if c != NONE_ROUTE}}
        none_matches = found.get(NONE_ROUTE, [])
        none_route = self.routes.get(NONE_ROUTE)
        none_conf = none_matches[0].confidence if none_matches and none_route and \
            none_matches[0].confidence >= none_route.confidence_threshold else 0.0
        if state is not None:
            from opensage.plugins.routing.route_classifier import FOLDED

            p = dict(probs)
            trained = {n for ns in state[1].values() for n in ns}

            def lexical_allowed(m: _Match) -> bool:  # see LEXICAL_MIN_PROBABILITY
                return (m.source.startswith("/") or m.route not in trained
                        or p.get(FOLDED.get(m.route, m.route), 0.0) >= LEXICAL_MIN_PROBABILITY)
        else:
            lexical_allowed = None
        best_route_conf = 0.0
        for matches in ranked:
            if matches[0].route == NONE_ROUTE:
                continue
            best_route_conf = max(best_route_conf, matches[0].confidence)
            route = self.routes[matches[0].route]
            for m in matches:  # best first; a match whose required arguments stay empty gives way
                if m.confidence < route.confidence_threshold or m.confidence <= none_conf:
                    break
                if lexical_allowed is not None and not lexical_allowed(m):
                    continue
                args = self._fill(route, m, text, session_id)
                if args is not None:
                    how = "pattern" if m.source.startswith("/") else "template"
                    return Decision(route.name, m.confidence, route.command, args, m.source,
                                    route.confidence_threshold, how=how, **extra)
        if state is not None:
            return self._decide_by_classifier(text, session_id, found, sims, near, probs, state, extra)
        if sim_list and not none_conf:
            best, score = sim_list[0]
            none_sim = sims.get(NONE_ROUTE, 0.0)
            route = self.routes.get(best)
            how = "meaning"
            if self.tiebreak and route is not None and best != NONE_ROUTE and (
                    abs(score - route.similarity_threshold) <= TIE_BAND
                    or abs(score - none_sim - NONE_MARGIN) <= TIE_BAND):
                options = [r for r, _ in sim_list[:3] if r != NONE_ROUTE] + [NONE_ROUTE]
                chosen = self._tiebreak(text, options)
                if chosen is not None:
                    how = "model"
                    best, score = chosen, sims.get(chosen, 0.0)
                    route = self.routes.get(best)
            if route is not None and best != NONE_ROUTE and (how == "model" or (
                    score >= route.similarity_threshold and score - none_sim >= NONE_MARGIN)):
                decision = self._filled(route, score, text, session_id, found, near, how, extra)
                if decision is not None:
                    return decision
            best_route_conf = max(best_route_conf, max((v for r, v in sims.items() if r != NONE_ROUTE), default=0.0))
        conf = max(none_conf, 1.0 - best_route_conf)
        matched = none_matches[0].source if none_conf else None
        return Decision(NONE_ROUTE, conf, None, {}, matched, None, **extra)

    def _filled(self, route: RouteSpec, score: float, text: str, session_id: str | None,
                found: dict[str, list[_Match]], near: list, how: str, extra: dict,
                threshold: float | None = None) -> Decision | None:
        """``route`` decided by meaning or the classifier: its arguments from its best
        template match that captured slots (confidence 0.6 or more), else from the
        request itself; ``None`` when required arguments stay empty."""
        lexical = [m for m in found.get(route.name, []) if m.slots and m.confidence >= 0.6]
        for m in [*lexical, _Match(route.name, score, "", {})]:
            args = self._fill(route, m, text, session_id)
            if args is not None:
                example = next((e for r, e, _ in near if r == route.name), None) if near else None
                thr = route.similarity_threshold if threshold is None else threshold
                return Decision(route.name, score, route.command, args, example, thr, how=how, **extra)
        return None

    def _decide_by_classifier(self, text, session_id, found, sims, near, probs, state, extra) -> Decision:
        clf, members = state
        none_sim = sims.get(NONE_ROUTE, 0.0)
        route_probs = [(c, p) for c, p in probs if c != NONE_ROUTE]
        best_cls, best_p = route_probs[0] if route_probs else (None, 0.0)
        top_cls = probs[0][0] if probs else NONE_ROUTE

        def member(cls: str) -> str:
            """The route of a class: the one whose examples are nearest (a template of the
            other route reaching its threshold wins, e.g. "how did we fix ...")."""
            names = members[cls]
            if len(names) == 1:
                return names[0]
            lexical = [(found[n][0].confidence, n) for n in names
                       if found.get(n) and found[n][0].confidence >= self.routes[n].confidence_threshold]
            if lexical:
                return max(lexical)[1]
            return max(names, key=lambda n: sims.get(n, 0.0))

        chosen: str | None = None
        how = "classifier"
        score = best_p
        threshold = self.probability_threshold(best_cls) if best_cls else None
        if best_cls is not None and top_cls == best_cls and best_p >= threshold:
            chosen = member(best_cls)
        if self.tiebreak and best_cls is not None and abs(best_p - threshold) <= TIE_BAND:
            options = [member(c) for c, _ in route_probs[:3]] + [NONE_ROUTE]
            answer = self._tiebreak(text, options)
            if answer is not None:
                how = "model"
                chosen = None if answer == NONE_ROUTE else answer
                cls = next((c for c, ns in members.items() if answer in ns), answer)
                score = dict(probs).get(cls, 0.0)
        # routes the classifier does not know compete by nearest examples
        trained = {n for ns in members.values() for n in ns}
        untrained = [(sims.get(n, 0.0), n) for n, r in self.routes.items()
                     if n not in trained and n != NONE_ROUTE and sims.get(n, 0.0) >= r.similarity_threshold
                     and sims.get(n, 0.0) - none_sim >= NONE_MARGIN]
        if untrained and how != "model":
            sim, name = max(untrained)
            if chosen is None or sim > sims.get(chosen, 0.0):
                decision = self._filled(self.routes[name], sim, text, session_id, found, near, "meaning", extra)
                if decision is not None:
                    return decision
        if chosen is not None:
            route = self.routes[chosen]
            decision = self._filled(route, score, text, session_id, found, near, how, extra,
                                    threshold=self.probability_threshold(best_cls) if how != "model" else None)
            if decision is not None:
                return decision
        return Decision(NONE_ROUTE, dict(probs).get(NONE_ROUTE, 1.0 - best_p), None, {}, None, None,
                        how="none", **extra)


# ----------------------------------------------------------------------------------
# Cached routers per workspace
# ----------------------------------------------------------------------------------

_CACHE: dict[tuple, tuple[Router, str | None]] = {}
_CACHE_LOCK = threading.Lock()


def _mtime(path: Path | None) -> int | None:
    try:
        return path.stat().st_mtime_ns if path is not None else None
    except OSError:
        return None


def user_routes_path(workspace) -> Path:
    """``<workspace>/.opencode/intent-routes.yaml``."""
    return Path(workspace.state_dir) / USER_ROUTES_FILE


def router_for(workspace=None, packaged: Path = PACKAGED_ROUTES) -> tuple[Router, str | None]:
    """The router for a workspace (packaged routes merged with its override file).

    Cached per (packaged file mtime, override file mtime): editing either file takes
    effect on the next call.

    :returns: ``(router, warning)``. When the project's override file is invalid the
        router uses the packaged routes only and ``warning`` holds the
        :class:`ConfigError` message (naming file, route and field); otherwise ``None``.
    :raises ConfigError: the packaged file itself is invalid.
    """
    user = user_routes_path(workspace) if workspace is not None else None
    key = (str(packaged), _mtime(packaged), str(user), _mtime(user))
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    warning = None
    try:
        router = Router(load_routes(packaged, user))
    except ConfigError as exc:
        if user is None or not user.exists():
            raise
        warning = f"{exc} (ignoring {user}; using the packaged routes)"
        log.warning("%s", warning)
        router = Router(load_routes(packaged, None))
    with _CACHE_LOCK:
        if len(_CACHE) > 32:
            _CACHE.clear()
        _CACHE[key] = (router, warning)
    return router, warning


def route_text(text: str, workspace=None, session_id: str | None = None) -> Decision:
    """Route ``text`` with the workspace's routes (see :func:`router_for`)."""
    router, _ = router_for(workspace)
    return router.decide(text, session_id=session_id)


def format_call(command: str, arguments: dict[str, Any]) -> str:
    """The ``@``-command line that runs ``command`` with ``arguments`` (parseable by
    :func:`opensage.commands.parse_line`): strings double-quoted, lists/objects as JSON."""
    parts = [command if command.startswith("@") else "@" + command]
    for key, value in arguments.items():
        if isinstance(value, str):
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'{key}="{escaped}"')
        elif isinstance(value, bool):
            parts.append(f"{key}={'true' if value else 'false'}")
        elif isinstance(value, (int, float)):
            parts.append(f"{key}={value}")
        else:
            parts.append(f"{key}={json.dumps(value, ensure_ascii=False)}")
    return " ".join(parts)
