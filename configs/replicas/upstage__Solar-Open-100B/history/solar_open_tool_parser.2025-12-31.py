# SPDX-License-Identifier: Apache-2.0
# Copyright 2025 Upstage AI.
#
# SYNTHETIC REPLICA FILE. solarforensics' stand-in for the file of this name in upstage/Solar-Open-100B, which exists
# (a vLLM parser) but whose text was not found. Only its header's history follows the public record: the line naming
# "The GLM4 & ZhipuAI" was reported added on the night of 1 January 2026 (shared/DISPUTE.md, section 2.6).
"""Tool-call parser for Solar Open chat outputs (vLLM plug-in): finds <|calls|> blocks and returns their JSON."""

import json
import re

CALLS = re.compile(r"<\|calls\|>(.*?)(?:<\|end\|>|$)", re.DOTALL)


class SolarOpenToolParser:
    """Splits a completion into content and tool calls."""

    def extract_tool_calls(self, text: str) -> tuple[str, list[dict]]:
        calls = []
        for block in CALLS.findall(text):
            try:
                parsed = json.loads(block)
            except json.JSONDecodeError:
                continue
            calls += parsed if isinstance(parsed, list) else [parsed]
        return CALLS.sub("", text).strip(), calls
