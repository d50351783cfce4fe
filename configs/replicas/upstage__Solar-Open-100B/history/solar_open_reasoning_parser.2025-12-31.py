# SPDX-License-Identifier: Apache-2.0
# Copyright 2025 Upstage AI.
#
# SYNTHETIC REPLICA FILE. solarforensics' stand-in for the file of this name in upstage/Solar-Open-100B, which exists
# (a vLLM parser) but whose text was not found. Only its header's history follows the public record: the line naming
# "The GLM4 & ZhipuAI" was reported added on the night of 1 January 2026 (shared/DISPUTE.md, section 2.6).
"""Reasoning parser for Solar Open chat outputs (vLLM plug-in): separates <|think|> sections from the answer."""

THINK, END = "<|think|>", "<|end|>"


class SolarOpenReasoningParser:
    """Returns (reasoning, answer) for one completion."""

    def extract_reasoning(self, text: str) -> tuple[str | None, str]:
        if THINK not in text:
            return None, text
        before, _, rest = text.partition(THINK)
        reasoning, _, answer = rest.partition(END)
        return reasoning.strip(), (before + answer).strip()
