"""handlers.py - the Python side of the pypool HTTP server example (pypool_httpd).

Each handler gets the HTTP request body as bytes and returns the reply body as bytes; the
server maps a raised exception to HTTP 500 with the exception's type, message and traceback.
Only the standard library and ``pypool`` are used.

    textstats    JSON in/out text statistics (words, sentences, top words, reading time)
    score        CPU-bound fuzzy ranking of candidates against a query (edit distance)
    cart_add     per-session shopping cart: add an item (state kept in ctx.session)
    cart_show    per-session shopping cart: show it
    echo         returns the body unchanged (for load tests of the plumbing)
    whoami       the serving worker's pid and Python version
    slow         sleeps {"ms": N} milliseconds: stands in for a slow downstream call
    tokens       a generator: streams an answer word by word, like a language model
                 (POST /stream/tokens)
    remember     stores a value in the server's key/value store (C), through ctx.host
    recall       reads it back, through ctx.host

Handlers raise BadInput (a ValueError) for requests they cannot use, so clients see
``{"type": "BadInput", "message": ...}`` instead of an anonymous KeyError, and NotFound (a
LookupError, HTTP 404) for a key the store does not hold.
"""

import collections
import json
import os
import re
import sys
import time

import pypool

# Words: runs of letters, with inner apostrophes ("don't"); digits and '_' are not words.
_WORD = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
_READING_WPM = 230
_STOPWORDS = frozenset(
    "a an and are as at be but by for from has have in is it its of on or that the this to "
    "was were will with".split())

_SCORE_MAX_CANDIDATES = 2000
_SCORE_MAX_LEN = 200
_CART_MAX_LINES = 100


class BadInput(ValueError):
    """The request body is not what the handler accepts."""


class NotFound(LookupError):
    """What the request names does not exist (HTTP 404)."""


def _json_object(payload):
    """The body parsed as a JSON object."""
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput("body is not valid UTF-8 JSON: %s" % exc) from None
    if not isinstance(doc, dict):
        raise BadInput("body must be a JSON object, got %s" % type(doc).__name__)
    return doc


def _field(doc, name, kind, default=None):
    """doc[name] checked against kind; default when absent (None: required)."""
    if name not in doc:
        if default is None:
            raise BadInput("missing field %r" % name)
        return default
    value = doc[name]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise BadInput("field %r has the wrong type (%s)" % (name, type(value).__name__))
    return value


def _reply(doc):
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# --- stateless: text statistics ---------------------------------------------------------------

@pypool.handler
def textstats(payload, ctx):
    """{"text": str, "top": int=5} -> counts, top words (stop words skipped), reading time."""
    doc = _json_object(payload)
    text = _field(doc, "text", str)
    top = _field(doc, "top", int, 5)
    if not 0 <= top <= 100:
        raise BadInput("top must be in [0, 100]")
    words = [w.lower() for w in _WORD.findall(text)]
    counts = collections.Counter(w for w in words if w not in _STOPWORDS)
    sentences = len(_SENTENCE_END.findall(text)) or (1 if words else 0)
    return _reply({
        "characters": len(text),
        "words": len(words),
        "unique_words": len(set(words)),
        "sentences": sentences,
        "lines": text.count("\n") + 1 if text else 0,
        "avg_word_length": round(sum(map(len, words)) / len(words), 2) if words else 0.0,
        "words_per_sentence": round(len(words) / sentences, 2) if sentences else 0.0,
        "reading_time_s": round(len(words) * 60 / _READING_WPM, 1),
        "top_words": [[w, n] for w, n in counts.most_common(top)],
    })


# --- CPU-bound: fuzzy ranking ------------------------------------------------------------------

def _levenshtein(a, b):
    """Edit distance, O(len(a) * len(b)) time, O(len(b)) memory: pure Python CPU work."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _similarity(query, candidate):
    """0..1: 70% normalised edit distance, 30% word overlap (Jaccard)."""
    q, c = query.lower(), candidate.lower()
    longest = max(len(q), len(c)) or 1
    edit = 1.0 - _levenshtein(q, c) / longest
    qw, cw = set(_WORD.findall(q)), set(_WORD.findall(c))
    overlap = len(qw & cw) / len(qw | cw) if qw | cw else 0.0
    return 0.7 * edit + 0.3 * overlap


@pypool.handler
def score(payload, ctx):
    """{"query": str, "candidates": [str], "top": int=5} -> the best matches, best first."""
    started = time.perf_counter()
    doc = _json_object(payload)
    query = _field(doc, "query", str)
    candidates = _field(doc, "candidates", list)
    top = _field(doc, "top", int, 5)
    if len(candidates) > _SCORE_MAX_CANDIDATES:
        raise BadInput("at most %d candidates" % _SCORE_MAX_CANDIDATES)
    if len(query) > _SCORE_MAX_LEN or any(
            not isinstance(c, str) or len(c) > _SCORE_MAX_LEN for c in candidates):
        raise BadInput("query and candidates must be strings of at most %d characters"
                       % _SCORE_MAX_LEN)
    ranked = sorted(((round(_similarity(query, c), 4), c) for c in candidates),
                    key=lambda sc: (-sc[0], sc[1]))
    return _reply({
        "query": query,
        "compared": len(candidates),
        "results": [{"candidate": c, "score": s} for s, c in ranked[:max(top, 0)]],
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 2),
    })


# --- stateful: a per-session cart ----------------------------------------------------------------

def _session(ctx):
    if ctx.session is None:
        raise BadInput("call this under /session/<id>/call/%s" % ctx.method)
    return ctx.session


def _cart_view(ctx, cart):
    total = sum(line["qty"] * line["price"] for line in cart.values())
    return _reply({
        "session": ctx.session_id,
        "worker_pid": os.getpid(),
        "lines": len(cart),
        "items": sum(line["qty"] for line in cart.values()),
        "total": round(total, 2),
        "cart": cart,
    })


@pypool.handler
def cart_add(payload, ctx):
    """{"sku": str, "qty": int=1, "price": number} -> the session's cart after adding."""
    cart = _session(ctx).setdefault("cart", {})
    doc = _json_object(payload)
    sku = _field(doc, "sku", str)
    qty = _field(doc, "qty", int, 1)
    price = _field(doc, "price", (int, float))
    if not sku or qty <= 0 or price < 0:
        raise BadInput("need a non-empty sku, qty > 0 and price >= 0")
    if sku not in cart and len(cart) >= _CART_MAX_LINES:
        raise BadInput("a cart holds at most %d lines" % _CART_MAX_LINES)
    line = cart.setdefault(sku, {"qty": 0, "price": price})
    line["qty"] += qty
    line["price"] = price
    return _cart_view(ctx, cart)


@pypool.handler
def cart_show(payload, ctx):
    """The session's cart (empty for a new or closed session)."""
    return _cart_view(ctx, _session(ctx).get("cart", {}))


# --- plumbing -------------------------------------------------------------------------------------

@pypool.handler
def oops(payload, ctx):
    """Fails the way a server bug does (the error names a file of the server): a 500 whose
    details stay in the server's log unless it runs with --debug."""
    raise RuntimeError("cannot open %s" % os.path.abspath(__file__ + ".missing"))


@pypool.handler
def echo(payload, ctx):
    """The body, unchanged."""
    return payload


@pypool.handler
def whoami(payload, ctx):
    """The serving worker's pid and interpreter version."""
    return _reply({"pid": os.getpid(), "python": sys.version.split()[0]})


@pypool.handler
def slow(payload, ctx):
    """{"ms": int} -> sleeps that long. Past the request's deadline the pool kills the worker."""
    ms = _field(_json_object(payload), "ms", int)
    if not 0 <= ms <= 600000:
        raise BadInput("ms must be in [0, 600000]")
    time.sleep(ms / 1000.0)
    return _reply({"slept_ms": ms})


# --- streaming: an LLM-like answer, one word at a time ---------------------------------------------

_TOKENS_ANSWER = (
    "A pool of Python worker processes lets a multi-threaded C server call Python without "
    "embedding it: each request borrows a worker, and this answer travels back word by word, "
    "the way a language model streams its tokens, every word reaching the client as soon as "
    "the handler yields it.")
_TOKENS_MAX = 1000000
_GATE_POLL_S = 0.01


def _wait_for_key(ctx, key):
    """Waits until the server's key/value store holds `key` (polling it through ctx.host)."""
    while True:
        try:
            ctx.host("kv_get", key.encode("utf-8"))
            return
        except pypool.HostError as exc:
            if exc.code != _KV_NOT_FOUND:
                raise  # a cancelled stream's host calls fail too: that ends the wait
        cancelled = getattr(ctx, "cancelled", None)
        if cancelled is not None and cancelled():
            return
        time.sleep(_GATE_POLL_S)


@pypool.handler
def tokens(payload, ctx):
    """{"text": str=<a canned answer>, "max_tokens": int=<words in text>, "delay_ms": int=30,
    "gate": str=none} -> yields the words of text one by one (cycling through them up to
    max_tokens), waiting delay_ms before each after the first; the last ends with a newline.

    With "gate", the stream holds after its first word until the server's key/value store has
    that key (PUT /kv/<gate>): a client sees the first word long before the last is produced.
    Closing the stream (the client went away) closes this generator at its next yield.
    """
    doc = _json_object(payload) if payload.strip() else {}
    words = _field(doc, "text", str, _TOKENS_ANSWER).split()
    if not words:
        raise BadInput("text has no words")
    count = _field(doc, "max_tokens", int, len(words))
    delay_ms = _field(doc, "delay_ms", int, 30)
    gate = _field(doc, "gate", str, "")
    if not 1 <= count <= _TOKENS_MAX:
        raise BadInput("max_tokens must be in [1, %d]" % _TOKENS_MAX)
    if not 0 <= delay_ms <= 10000:
        raise BadInput("delay_ms must be in [0, 10000]")
    for i in range(count):
        if i > 0 and delay_ms:
            time.sleep(delay_ms / 1000.0)
        last = i == count - 1
        yield (words[i % len(words)] + ("\n" if last else " ")).encode("utf-8")
        if i == 0 and gate and not last:
            _wait_for_key(ctx, gate)


# --- host calls: the server's key/value store ------------------------------------------------------
# The store lives in the C server (kv.c); handlers reach it with ctx.host(name, payload), which
# runs the server's host function on the request's own thread (hostfn.c):
#   kv_get  payload: key                -> the value
#   kv_set  payload: key, NUL, value    -> b""
# Failures raise pypool.HostError with a code: 400 bad key, 404 no such key, 413 value too large
# (over 65536 bytes), 507 store full (--kv-max-keys), 501 unknown host function.

_KV_BAD_KEY = 400
_KV_NOT_FOUND = 404
_KV_TOO_LARGE = 413


def _kv(ctx, name, payload, key):
    """ctx.host(name, payload), the client's mistakes turned into BadInput / NotFound. Other
    failures (store full, no such host function) stay HostError: a 500, the server's problem."""
    try:
        return ctx.host(name, payload)
    except pypool.HostError as exc:
        if exc.code == _KV_NOT_FOUND:
            raise NotFound("no value stored under %r" % key) from None
        if exc.code == _KV_BAD_KEY:
            raise BadInput("key must be 1-128 of [A-Za-z0-9_.:-]") from None
        if exc.code == _KV_TOO_LARGE:
            raise BadInput("value over 65536 bytes") from None
        raise


@pypool.handler
def remember(payload, ctx):
    """{"key": str, "value": str} -> stores value under key in the server's key/value store."""
    doc = _json_object(payload)
    key = _field(doc, "key", str)
    value = _field(doc, "value", str).encode("utf-8")
    if "\0" in key:
        raise BadInput("key must be 1-128 of [A-Za-z0-9_.:-]")
    _kv(ctx, "kv_set", key.encode("utf-8") + b"\0" + value, key)
    return _reply({"key": key, "stored": len(value), "worker_pid": os.getpid()})


@pypool.handler
def recall(payload, ctx):
    """{"key": str} -> {"key", "value"} from the server's key/value store; 404 if unset."""
    key = _field(_json_object(payload), "key", str)
    value = _kv(ctx, "kv_get", key.encode("utf-8"), key)
    return _reply({"key": key, "value": value.decode("utf-8", errors="replace"),
                   "worker_pid": os.getpid()})
