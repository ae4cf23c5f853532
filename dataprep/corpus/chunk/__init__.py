"""Token-exact chunks for continued pretraining.

Each chunk, tokenized on its own (as Axolotl's `type: completion` does), has at most
`max_tokens` tokens: exactly that many for nearly all chunks, a few fewer for some (a
cut never splits the bytes of one character; see also `tolerance`), and fewer for the
last chunk of a document. With `max_tokens = sequence_len - 2` (room for BOS and EOS)
and `sample_packing: true`, packed rows are full and nothing is truncated.

The `Chunker` (chunker.py) picks one of three methods from the tokenizer's profile
(probe.py) with `method="auto"`:

- word-local (word_local.py): Llama-2 and Mistral style; each document is encoded once,
  in segments (segmented.py), without offsets; about 1.0x the text is encoded.
- word-start (word_start.py): byte-level BPE with a regex pre-tokenizer (Llama-3, GPT-2);
  each document is encoded once, as above.
- candidates (candidates.py): any other fast tokenizer, `paragraph=True`, or a document
  the methods above do not fit; about 13% extra encoding at 126 tokens.

`verify` re-encodes chunks (verify.py): "all", "none", or "sample" (every 50th chunk,
switching to "all" for the rest of the run if one sample disagrees).
"""

from cosmosage.dataprep.corpus.chunk.chunker import Chunker
from cosmosage.dataprep.corpus.chunk.probe import METHODS, backend_tokenizer, word_start_table
from cosmosage.dataprep.corpus.chunk.records import Chunk, packing_efficiency
from cosmosage.dataprep.corpus.chunk.segmented import split_segments

# The names the tests import two of the helpers by.
_segments = split_segments
_word_start_table = word_start_table

__all__ = [
    "METHODS",
    "Chunk",
    "Chunker",
    "backend_tokenizer",
    "packing_efficiency",
    "split_segments",
    "word_start_table",
]
