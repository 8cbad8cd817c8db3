"""Beam search with fairseq's semantics over a static key/value cache.

Same hypotheses and scores as fairseq's ``SequenceGenerator`` (beam, length penalty, min/max
length, unk penalty, EOS handling: candidates are the top 2*beam, an EOS among the top beam
finishes a hypothesis, a sentence ends when it holds beam finished hypotheses or at max length),
but with every tensor shaped once for the whole search: finished sentences stay in the batch and
are masked instead of removed, finished hypotheses go into fixed buffers, and the decoder keeps
its keys and values in preallocated buffers (``hat.modules.attention.STATIC_STEP``). So one
decode step (decoder + beam update) has the same shapes at every step, which is what a CUDA
graph needs (:mod:`hat.generate.graph`); on a CPU it runs eagerly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from hat.modules.attention import STATIC_LEN, STATIC_STEP


@dataclass(frozen=True)
class BeamSettings:
    """fairseq-generate's options that shape the search (its defaults)."""

    beam: int = 5
    lenpen: float = 1.0
    min_len: int = 1
    max_len_a: float = 0.0
    max_len_b: int = 200
    unk_penalty: float = 0.0
    normalize_scores: bool = True


class BeamState:
    """Every tensor of one search, allocated once: the live hypotheses (``tokens``, cumulative
    ``scores``), the finished ones per sentence (``fin_*``) and the decoder's static cache."""

    def __init__(self, bsz: int, beam: int, max_len: int, pad: int, eos: int,
                 device: torch.device) -> None:
        n, L = bsz * beam, max_len
        self.bsz, self.beam, self.max_len = bsz, beam, max_len
        self.tokens = torch.full((n, L + 2), pad, dtype=torch.long, device=device)
        self.tokens[:, 0] = eos
        self.scores = torch.zeros(n, L + 1, device=device)
        self.fin_tokens = torch.full((bsz, beam, L + 1), pad, dtype=torch.long, device=device)
        self.fin_pos = torch.zeros(bsz, beam, L + 1, device=device)
        self.fin_score = torch.full((bsz, beam), -math.inf, device=device)
        self.fin_len = torch.zeros(bsz, beam, dtype=torch.long, device=device)
        self.fin_count = torch.zeros(bsz, dtype=torch.long, device=device)
        self.finished = torch.zeros(bsz, dtype=torch.bool, device=device)
        self.ignore = torch.zeros(bsz, beam, dtype=torch.bool, device=device)
        self.order = torch.arange(n, device=device)  # beam reorder for the next step
        self.step = torch.zeros((), dtype=torch.long, device=device)
        self.cache: dict[str, Any] = {STATIC_STEP: self.step, STATIC_LEN: L + 1}
        self.bbsz_offsets = (torch.arange(bsz, device=device) * beam).unsqueeze(1)
        self.rows = torch.arange(bsz, device=device)


class StaticBeamSearch:
    """Beam search of a HAT encoder-decoder model (a SuperTransformer with its SubTransformer
    set, or an exported SubTransformer) with a static key/value cache."""

    def __init__(self, model: Any, tgt_dict: Any, settings: BeamSettings | None = None,
                 max_len: int = 0) -> None:
        self.model = model.eval()
        self.s = settings or BeamSettings()
        self.pad, self.eos, self.unk = tgt_dict.pad(), tgt_dict.eos(), tgt_dict.unk()
        self.vocab = len(tgt_dict)
        self.model_max_len = max_len or model.max_decoder_positions()

    def max_len(self, src_lengths: Tensor | int) -> int:
        """fairseq's: ``min(a * longest source + b, model positions - 1)`` (``src_lengths``:
        the lengths, or the longest)."""
        longest = src_lengths if isinstance(src_lengths, int) else int(src_lengths.max())
        return min(int(self.s.max_len_a * longest + self.s.max_len_b), self.model_max_len - 1)

    # ------------------------------------------------------------------ the search
    @torch.inference_mode()
    def generate(self, src_tokens: Tensor, src_lengths: Tensor, early_stop: bool = True
                 ) -> list[list[dict[str, Tensor]]]:
        """Hypotheses per sentence, best first, as fairseq's generator returns them
        (``tokens`` ending with EOS, ``score``, ``positional_scores``), on the CPU.
        ``early_stop=False`` runs every step, as a CUDA graph replay does (same hypotheses)."""
        st, enc = self.start(src_tokens, src_lengths)
        self.run_all(st, enc, early_stop)
        return self.results(st)

    def run_all(self, st: BeamState, enc: Any, early_stop: bool = False) -> None:
        """Every decode step (until all sentences are done, with ``early_stop``)."""
        for step in range(st.max_len + 1):
            self.step(st, enc, step)
            if early_stop and bool(st.finished.all()):
                break

    def start(self, src_tokens: Tensor, src_lengths: Tensor, max_len: int | None = None,
              has_padding: bool | None = None) -> tuple[BeamState, Any]:
        """Encode the batch (repeated beam times) and allocate the search's tensors. A CUDA
        graph capture passes ``max_len`` and ``has_padding`` (nothing may read the GPU then)."""
        max_len = self.max_len(src_lengths) if max_len is None else max_len
        if self.s.min_len > max_len:
            raise ValueError("min_len cannot be larger than max_len")
        bsz, beam = src_tokens.size(0), self.s.beam
        enc = self.model.encoder(src_tokens, src_lengths, has_padding=has_padding)
        order = torch.arange(bsz, device=src_tokens.device).repeat_interleave(beam)
        enc = self.model.encoder.reorder_encoder_out(enc, order)
        self.model.decoder.embed_positions.reserve(max_len + 2)
        return BeamState(bsz, beam, max_len, self.pad, self.eos, src_tokens.device), enc

    def lprobs(self, st: BeamState, enc: Any, step: int) -> Tensor:
        """Log-probabilities of the next token for every live hypothesis, ``[bsz*beam, V]``."""
        if step > 0:  # follow the beam the previous step chose
            self.model.decoder.reorder_incremental_state_scripting(st.cache, st.order)
        st.step.fill_(step)
        out = self.model.decoder(st.tokens[:, step : step + 1], enc, incremental_state=st.cache)
        return self.model.get_normalized_probs((out[0][:, -1:, :], None), log_probs=True)[:, -1]

    def step(self, st: BeamState, enc: Any, step: int) -> None:
        """One step: decode, choose 2*beam candidates per sentence, finish the EOS ones among
        the best beam, keep the best beam others."""
        s, K, B, L = self.s, st.beam, st.bsz, st.max_len
        lp = self.lprobs(st, enc, step)
        lp = lp.masked_fill(lp != lp, -math.inf)
        lp[:, self.pad] = -math.inf
        lp[:, self.unk] -= s.unk_penalty
        if step >= L:  # only EOS is left
            eos_col = lp[:, self.eos].clone()
            lp.fill_(-math.inf)
            lp[:, self.eos] = eos_col
        elif step < s.min_len:
            lp[:, self.eos] = -math.inf
        lp = lp.view(B, K, -1)
        if step == 0:
            lp = lp[:, ::K, :].contiguous()
        else:
            lp = lp + st.scores.view(B, K, -1)[:, :, step - 1].unsqueeze(-1)
        flat = lp.view(B, -1)
        cand_scores, idx = torch.topk(flat, k=min(2 * K, flat.size(1) - 1))
        cand_beams = torch.div(idx, self.vocab, rounding_mode="trunc")
        cand_tokens = idx.fmod(self.vocab)
        cand_bbsz = cand_beams + st.bbsz_offsets
        eos_mask = cand_tokens.eq(self.eos) & cand_scores.ne(-math.inf)
        eos_mask[:, :K] &= ~st.ignore
        eos_mask &= ~st.finished.unsqueeze(1)  # fairseq drops finished sentences from the batch
        self._finalize(st, step, eos_mask[:, :K], cand_bbsz[:, :K], cand_scores[:, :K])
        if step >= L:
            return
        # the best beam candidates that are not EOS (or ignored) go on
        ends = eos_mask.clone()
        ends[:, :K] = st.ignore | ends[:, :K]
        cand_size = 2 * K
        active = ends.long() * cand_size + torch.arange(ends.size(1), device=ends.device)
        new_ignore, hypos = torch.topk(active, k=K, dim=1, largest=False)
        st.ignore = new_ignore.ge(cand_size)[:, :K]
        order = torch.gather(cand_bbsz, 1, hypos).view(-1)
        st.tokens[:, : step + 1] = st.tokens[:, : step + 1].index_select(0, order)
        st.tokens.view(B, K, -1)[:, :, step + 1] = torch.gather(cand_tokens, 1, hypos)
        if step > 0:
            st.scores[:, :step] = st.scores[:, :step].index_select(0, order)
        st.scores.view(B, K, -1)[:, :, step] = torch.gather(cand_scores, 1, hypos)
        st.order = order

    def _finalize(self, st: BeamState, step: int, eos: Tensor, bbsz: Tensor, scores: Tensor
                  ) -> None:
        """Store the hypotheses that end with EOS this step (in candidate order, while the
        sentence has room), then mark the sentences that are done."""
        K, L = st.beam, st.max_len
        n_pos = step + 1
        seen = eos.any(dim=1)
        norm = (step + 1) ** self.s.lenpen if self.s.normalize_scores else 1.0
        for j in range(K):
            take = eos[:, j] & st.fin_count.lt(K)
            rows = bbsz[:, j]
            toks = st.tokens.index_select(0, rows)[:, 1 : step + 2].clone()
            toks[:, step] = self.eos
            pos = st.scores.index_select(0, rows)[:, :n_pos].clone()
            pos[:, step] = scores[:, j]
            pos[:, 1:] = pos[:, 1:] - pos[:, :-1]
            slot = st.fin_count.clamp(max=K - 1)
            keep = take.unsqueeze(1)
            cur_t = st.fin_tokens[st.rows, slot]
            cur_t[:, :n_pos] = torch.where(keep, toks, cur_t[:, :n_pos])
            st.fin_tokens[st.rows, slot] = cur_t
            cur_p = st.fin_pos[st.rows, slot]
            cur_p[:, :n_pos] = torch.where(keep, pos, cur_p[:, :n_pos])
            st.fin_pos[st.rows, slot] = cur_p
            st.fin_score[st.rows, slot] = torch.where(take, scores[:, j] / norm,
                                                      st.fin_score[st.rows, slot])
            st.fin_len[st.rows, slot] = torch.where(take, torch.full_like(slot, n_pos),
                                                    st.fin_len[st.rows, slot])
            st.fin_count += take.long()
        done = seen & (st.fin_count.eq(K) | (step == L))
        st.finished |= done

    @staticmethod
    def pack(st: BeamState) -> Tensor:
        """The finished hypotheses as one float64 vector (counts, lengths, scores, tokens,
        positional scores; exact for token ids and float32 scores), so that reading them to
        the host is one transfer. A CUDA graph records this at the end of its search."""
        return torch.cat([st.fin_count.double(), st.fin_len.double().flatten(),
                          st.fin_score.double().flatten(), st.fin_tokens.double().flatten(),
                          st.fin_pos.double().flatten()])

    def results(self, st: BeamState, packed: Tensor | None = None
                ) -> list[list[dict[str, Tensor]]]:
        """The finished hypotheses per sentence, best first (fairseq's order), as CPU tensors,
        read from the device in one transfer (``packed``: :meth:`pack`'s output, if made)."""
        B, K, W = st.bsz, st.beam, st.max_len + 1
        flat = (self.pack(st) if packed is None else packed).cpu()
        counts, lens, scores, tokens, positional = torch.split(
            flat, [B, B * K, B * K, B * K * W, B * K * W])
        counts, lens = counts.long().tolist(), lens.long().view(B, K).tolist()
        scores = scores.float().view(B, K)
        tokens, positional = tokens.long().view(B, K, W), positional.float().view(B, K, W)
        out = []
        for b in range(B):
            hyps = [{"tokens": tokens[b, k, :lens[b][k]], "score": scores[b, k],
                     "positional_scores": positional[b, k, :lens[b][k]],
                     "attention": torch.empty(0), "alignment": torch.empty(0)}
                    for k in range(counts[b])]
            if hyps:  # fairseq's sort: torch.sort of the float scores, descending
                ranks = torch.sort(scores[b, : counts[b]], descending=True)[1].tolist()
                hyps = [hyps[i] for i in ranks]
            out.append(hyps)
        return out
