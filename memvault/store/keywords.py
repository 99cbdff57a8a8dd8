"""Keyword tokenization shared by every backend's full-text index.

Both backends index the same normalized token string (lowercased, unicode-folded, stop words
dropped, English Snowball stems), produced here in Python: SQLite's FTS5 and PostgreSQL's
`to_tsvector('simple', ...)` only split it on spaces, so a query finds the same memories on
either backend. Queries go through the same function, so user text never reaches an FTS
query parser: only quoted stems do.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import snowballstemmer

# Letters and digits only: underscores, punctuation and FTS operators all split words, so no
# token can carry query syntax and both backends' parsers see plain words.
_WORD = re.compile(r"[^\W_]+")
_CACHE_LIMIT = 200_000
# Memories a keyword query may rank before its most frequent stems are dropped (~3 ms).
log = logging.getLogger("memvault.store")

MATCH_BUDGET = 5_000

# A small English stop list (the classic SMART/Snowball core): words that carry no topic.
_STOP_TEXT = """
a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further
had has have having he her here hers herself him himself his how i if in into is it its
itself just me more most my myself no nor not now of off on once only or other our ours
ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself yourselves
s t d ll m re ve y don didn doesn isn wasn weren won wouldn shouldn couldn hasn haven hadn
aren ain ma o
"""
STOP_WORDS = frozenset(_STOP_TEXT.split())


def fold(text: str) -> str:
    """Lowercase and strip accents (NFKD, combining marks dropped): 'Café' -> 'cafe'."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


class KeywordTokenizer:
    """Text to index tokens. Thread-safe: the Snowball stemmer keeps state while stemming."""

    def __init__(self) -> None:
        self._stemmer = snowballstemmer.stemmer("english")
        self._stems: dict[str, str] = {}
        self._lock = threading.Lock()

    def tokens(self, text: str) -> list[str]:
        words = [w for w in _WORD.findall(fold(text)) if w not in STOP_WORDS]
        with self._lock:
            if len(self._stems) > _CACHE_LIMIT:
                self._stems.clear()
            out = []
            for word in words:
                stem = self._stems.get(word)
                if stem is None:
                    stem = self._stemmer.stemWord(word)
                    self._stems[word] = stem
                out.append(stem)
        return out

    def document(self, text: str) -> str:
        """The token string a backend indexes for a memory's text."""
        return " ".join(self.tokens(text))

    def query_terms(self, text: str) -> list[str]:
        """Distinct query stems in first-seen order (at most 64: a 10k-character query must
        not become a 2000-term OR)."""
        return list(dict.fromkeys(self.tokens(text)))[:64]


def bounded_terms(terms: list[str], documents: dict[str, int],
                  budget: int = MATCH_BUDGET) -> list[str]:
    """The query stems worth ranking: indexed ones, the most frequent dropped while together
    they would match more than `budget` memories (at least the rarest one stays). BM25 weighs
    a frequent stem least, and ranking cost grows with every memory matched: this bounds a
    search in a large namespace while leaving small ones exactly ranked."""
    kept = sorted((t for t in terms if documents.get(t)), key=lambda t: documents[t])
    while len(kept) > 1 and sum(documents[t] for t in kept) > budget:
        kept.pop()
    return kept


# BM25's term-frequency saturation and length normalization. A memory is a sentence or two,
# so a long one is rarely long for want of focus: the LoCoMo development split ranks best with
# a third of the usual length normalization (b 0.75 -> 0.3: +1.5 points R@5 fused; see
# BENCHMARKS.md). FTS5's own bm25() fixes b at 0.75, so SQLite re-scores its matches here.
K1 = 1.2
LENGTH_NORMALIZATION = 0.3


def idf(terms: list[str], total: int, frequency: dict[str, int]) -> dict[str, float]:
    """Each stem's inverse document frequency as FTS5 computes it (its floor included);
    statistics a little stale (writes since the count) never undercount the matches."""
    total = max(total, *(frequency.get(term, 0) for term in terms))
    return {term: max(1e-6, math.log((total - frequency[term] + 0.5)
                                     / (frequency[term] + 0.5)))
            for term in terms if frequency.get(term)}


def bm25(terms: list[str], documents: list[str], total: int, mean_length: float,
         frequency: dict[str, int], k1: float = K1,
         b: float = LENGTH_NORMALIZATION) -> list[float]:
    """Okapi BM25 of each token string for the query stems with FTS5's IDF: `total`
    memories of mean length `mean_length` in the whole store, `frequency` the memories
    holding each stem."""
    split = [doc.split() for doc in documents]
    weights = idf(terms, max(total, len(split)), frequency)
    scores = []
    for words in split:
        norm = k1 * (1 - b + b * len(words) / max(mean_length, 1e-9))
        score = 0.0
        for term, weight in weights.items():
            tf = words.count(term)
            if tf:
                score += weight * tf * (k1 + 1) / (tf + norm)
        scores.append(score)
    return scores


def still_fresh(counted_at: int, seq: int, total: int) -> bool:
    """Whether a statistic counted at journal position `counted_at` still stands at `seq`:
    the journal has moved by at most 1% of the store's `total` memories, and not back (a
    restore rewrites history)."""
    return 0 <= seq - counted_at <= total // 100


class CorpusFigures:
    """Memories in the store and their mean token count (BM25's length figures), recounted
    once the journal moved by more than 1% of the store since the last count: a small store
    always, 100k memories every 1,000 writes. A count reads every memory (1.7 s at a million
    on PostgreSQL), so a large store's recount runs in a background thread while searches go
    on with the figures it replaces (1% of writes barely moves them); a small store's count
    and one after the journal went back (a restore) are made in the caller. The first count is
    started in the background by `prime` when a server starts, and a search arriving during it
    waits for it rather than counting again; without `prime`, the first search counts."""

    BACKGROUND_FROM = 50_000  # memories

    def __init__(self, count: Callable[[], tuple[int, float]]) -> None:
        self._count = count  # -> (memories, tokens in all of them)
        self._figures: tuple[int, int, float] | None = None  # (seq, total, mean length)
        self._lock = threading.Lock()
        self._recounting = False
        self._idle = threading.Event()
        self._idle.set()

    def prime(self, seq: int) -> None:
        """Count in the background now if nothing was counted yet."""
        if self._figures is None:
            self._recount_later(seq)

    def get(self, seq: int) -> tuple[int, float]:
        """The figures as of journal position `seq` (the store's last_seq)."""
        cached = self._figures
        if cached is None and not self._idle.is_set():
            self._idle.wait()  # the first count, started by prime
            cached = self._figures
        if cached is not None and still_fresh(cached[0], seq, cached[1]):
            return cached[1], cached[2]
        if cached is not None and seq > cached[0] and cached[1] >= self.BACKGROUND_FROM:
            self._recount_later(seq)
            return cached[1], cached[2]
        return self._recount(seq)

    def _recount(self, seq: int) -> tuple[int, float]:
        total, tokens = self._count()
        self._figures = (seq, total, tokens / total if total else 1.0)
        return self._figures[1], self._figures[2]

    def _recount_later(self, seq: int) -> None:
        with self._lock:
            if self._recounting:
                return
            self._recounting = True
            self._idle.clear()
        threading.Thread(target=self._recount_quietly, args=(seq,), daemon=True,
                         name="memvault-keyword-figures").start()

    def _recount_quietly(self, seq: int) -> None:
        try:
            self._recount(seq)
        except Exception:  # a search is not the place to fail for it: the next one retries
            log.warning("recounting the keyword statistics failed; searches go on with the "
                        "previous ones", exc_info=True)
        finally:
            with self._lock:
                self._recounting = False
                self._idle.set()


class TermCounts:
    """Memories holding each query stem, from `count` (stems -> counts). A frequent stem's
    count is remembered until the journal moved by 1% of the store: counting it reads many
    index entries, and its share of a large store barely moves in 1% of writes (its IDF, and
    whether the match budget drops it, with it). A rare stem is counted each time (cheap), so
    a memory just added is found by a word no other one holds."""

    KEPT = 50_000  # stems remembered (a few MB at most)
    REMEMBERED_FROM = 100  # matches

    def __init__(self, count: Callable[[list[str]], dict[str, int]]) -> None:
        self._count = count
        self._counts: dict[str, tuple[int, int]] = {}  # stem -> (journal seq, memories)

    def get(self, terms: list[str], total: int, seq: int) -> dict[str, int]:
        known = {t: n for t, (at, n) in ((t, self._counts.get(t, (-1, 0))) for t in terms)
                 if at >= 0 and still_fresh(at, seq, total)}
        missing = [t for t in terms if t not in known]
        if missing:
            counted = self._count(missing)
            if len(self._counts) > self.KEPT:
                self._counts.clear()
            for term in missing:
                known[term] = n = int(counted.get(term, 0))
                if n >= self.REMEMBERED_FROM:
                    self._counts[term] = (seq, n)
        return known


@dataclass(frozen=True)
class KeywordQuery:
    """What a backend ranks one keyword search by: the query stems worth ranking (the most
    frequent dropped past the match budget) and the store's figures for their BM25."""

    terms: list[str]
    total: int
    mean_length: float
    frequency: dict[str, int]


class KeywordStatistics:
    """The store-wide BM25 figures both backends' keyword rankings read, kept as
    CorpusFigures and TermCounts say."""

    def __init__(self, keywords: KeywordTokenizer, last_seq: Callable[[], int],
                 figures: Callable[[], tuple[int, float]],
                 frequency: Callable[[list[str]], dict[str, int]]) -> None:
        self.keywords = keywords
        self._last_seq = last_seq
        self._figures = CorpusFigures(figures)
        self._counts = TermCounts(frequency)

    def prime(self) -> None:
        """Start counting the store-wide figures in the background (a server's start)."""
        self._figures.prime(self._last_seq())

    def query(self, text: str) -> KeywordQuery | None:
        """None when no stem of `text` is in the index (nothing to rank)."""
        terms = self.keywords.query_terms(text)
        if not terms:
            return None
        seq = self._last_seq()
        total, mean_length = self._figures.get(seq)
        frequency = self._counts.get(terms, total, seq)
        kept = bounded_terms(terms, frequency)
        return KeywordQuery(kept, total, mean_length, frequency) if kept else None
