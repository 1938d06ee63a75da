"""Class names -> the prompts the DINO family reads: "a. b. c." chunks of at most
`max_text_len` tokens, with a map from each token to the class it belongs to.

Grounding DINO and MM-Grounding-DINO read one sentence of at most `max_text_len` (256) tokens
in which "." separates the phrases. A vocabulary that does not fit (LVIS's 1,203 names need
about 5 x 256 tokens) is packed into several chunks, in vocabulary order; every chunk is a
complete prompt on its own ("[CLS] a . b . [SEP]"), exactly what transformers' processor makes
of that chunk's names (lowercased, joined with ". ", ended with ".").
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import VocabularyError
from ..text import apply_template


@dataclass(frozen=True)
class TextChunk:
    """One prompt of a vocabulary.

    text: "a. b. c." (lowercased phrases). input_ids, attention_mask, token_type_ids: (1, L)
    int64 tensors (L <= max_text_len). token_class: (L,) int64, the vocabulary index of the
    class each token spells, -1 for [CLS], [SEP] and the "." separators. classes: the
    vocabulary indices this chunk holds, in order (a contiguous range)."""

    text: str
    input_ids: Any
    attention_mask: Any
    token_type_ids: Any
    token_class: Any
    classes: range


@dataclass(frozen=True)
class PhraseTable:
    """What the Detector hands a DINO-family backend instead of class embeddings: the
    vocabulary's phrases (classes then negatives) packed into `chunks`."""

    phrases: tuple[str, ...]
    chunks: tuple[TextChunk, ...]

    def __len__(self) -> int:
        return len(self.phrases)

    def to(self, device) -> "PhraseTable":
        """The tensors stay on the CPU until a chunk runs (they are a few hundred integers)."""
        return self


def merged_text(phrases: Sequence[str]) -> str:
    """Phrases -> "a. b. c.", as transformers' GroundingDinoProcessor merges candidate labels."""
    return ". ".join(p.strip().lower() for p in phrases) + "."


def pack_chunks(lengths: Sequence[int], budget: int) -> list[range]:
    """Greedy packing of phrases of `lengths` tokens (each costs its tokens plus one ".")
    into consecutive ranges whose cost fits `budget` (max_text_len minus [CLS] and [SEP])."""
    chunks, start, used = [], 0, 0
    for i, n in enumerate(lengths):
        if n + 1 > budget:
            raise VocabularyError(f"class #{i + 1} is {n} tokens long: a prompt holds at most {budget - 1}")
        if used + n + 1 > budget:
            chunks.append(range(start, i))
            start, used = i, 0
        used += n + 1
    chunks.append(range(start, len(lengths)))
    return chunks


class PhraseEncoder:
    """The Detector's text encoder for a DINO-family backend: class names -> `PhraseTable`,
    built once per vocabulary (the last `memory_size` kept). `templates` must be one template
    (the phrase of a class); `chunk_tokens` (<= max_text_len) is the token budget of a chunk."""

    def __init__(self, tokenizer, templates: Sequence[str], chunk_tokens: int, family: str, memory_size: int = 16):
        if len(templates) != 1:
            raise VocabularyError(f"{family} reads one phrase per class: give one template (e.g. --templates '{{}}'), "
                                  f"not {len(templates)}")
        self.tokenizer, self.template, self.chunk_tokens = tokenizer, templates[0], chunk_tokens
        self.memory_size = memory_size
        self._memory: OrderedDict[tuple[str, ...], PhraseTable] = OrderedDict()

    def __call__(self, names: Sequence[str]) -> PhraseTable:
        key = tuple(names)
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        phrases = tuple(p.strip().lower() for p in apply_template(self.template, key))
        lengths = [len(ids) for ids in self.tokenizer(list(phrases), add_special_tokens=False)["input_ids"]]
        chunks = tuple(self.chunk(phrases, r) for r in pack_chunks(lengths, self.chunk_tokens - 2))
        table = self._memory[key] = PhraseTable(phrases, chunks)
        while len(self._memory) > self.memory_size:
            self._memory.popitem(last=False)
        return table

    def chunk(self, phrases: Sequence[str], classes: range) -> TextChunk:
        """Tokenise the phrases `classes` as one prompt and map its tokens to classes through
        the tokenizer's character offsets."""
        import torch

        text = merged_text([phrases[i] for i in classes])
        enc = self.tokenizer(text, return_offsets_mapping=True, return_token_type_ids=True, return_tensors="pt")
        if enc["input_ids"].shape[1] > self.chunk_tokens:  # the packing counted phrases tokenised alone
            raise VocabularyError(f"a prompt of {len(classes)} classes tokenises to {enc['input_ids'].shape[1]} "
                                  f"tokens, over {self.chunk_tokens}")
        spans, pos = [], 0
        for i in classes:  # character span of each phrase in "a. b. c."
            spans.append((pos, pos + len(phrases[i]), i))
            pos += len(phrases[i]) + 2
        token_class = torch.full((enc["input_ids"].shape[1],), -1, dtype=torch.long)
        for t, (s, e) in enumerate(enc["offset_mapping"][0].tolist()):
            if e > s and text[s:e] != ".":
                token_class[t] = next((c for a, b, c in spans if a <= s < b), -1)
        return TextChunk(text, enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], token_class, classes)


__all__ = ["PhraseEncoder", "PhraseTable", "TextChunk", "merged_text", "pack_chunks"]
