"""Runs one Mixture-of-Agents config on a task, exactly as the workshop does."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from optimizer._config import HELPER_RESPONSE, AgentSpec, MoAConfig
from optimizer.providers import ChatRequest, Message, Router

__all__ = [
    "MAIN_AGENT",
    "CallRecord",
    "MoAResult",
    "aggregate",
    "fill_helper_response",
    "replicas",
    "run_moa",
]

MAIN_AGENT = "main"
_REPLICA_SEED_STRIDE = 1_000_003  # identical agents get far-apart seeds


@dataclass(frozen=True)
class CallRecord:
    """One model call made while running a config.

    Attributes:
        cycle: Layer cycle (1-based); the main agent's call has ``cycles + 1``.
        agent: Agent name (``main`` for the main agent).
        model: Model id as written in the config.
        temperature: Sampling temperature used.
        messages: What the model received.
        response: What it answered.
        prompt_tokens: Prompt tokens billed (0 for a cache hit).
        completion_tokens: Completion tokens billed (0 for a cache hit).
        latency: Seconds the call took.
        retries: Retries the call needed.
        cached: Whether the answer came from the response cache.
    """

    cycle: int
    agent: str
    model: str
    temperature: float
    messages: tuple[Message, ...]
    response: str
    prompt_tokens: int
    completion_tokens: int
    latency: float
    retries: int
    cached: bool

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-ready form."""
        return {
            "cycle": self.cycle,
            "agent": self.agent,
            "model": self.model,
            "temperature": self.temperature,
            "messages": [m.to_dict() for m in self.messages],
            "response": self.response,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency": self.latency,
            "retries": self.retries,
            "cached": self.cached,
        }


@dataclass(frozen=True)
class MoAResult:
    """The outcome of running a config once.

    Attributes:
        answer: The main agent's final answer.
        calls: Every call, in cycle order, agents in config order, main agent last.
        wall_time: Seconds from start to final answer.
    """

    answer: str
    calls: tuple[CallRecord, ...]
    wall_time: float

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens over all calls."""
        return sum(c.prompt_tokens for c in self.calls)

    @property
    def completion_tokens(self) -> int:
        """Completion tokens over all calls."""
        return sum(c.completion_tokens for c in self.calls)

    @property
    def cache_hits(self) -> int:
        """Calls answered from the cache."""
        return sum(c.cached for c in self.calls)

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-ready form."""
        return {
            "answer": self.answer,
            "calls": [c.to_dict() for c in self.calls],
            "wall_time": self.wall_time,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cache_hits": self.cache_hits,
        }


def fill_helper_response(prompt: str, helper_response: str) -> str:
    """Replaces the literal ``{helper_response}``; other braces are left alone."""
    return prompt.replace(HELPER_RESPONSE, helper_response)


def aggregate(template: str, responses: list[str]) -> str:
    """Numbers a cycle's responses in agent order and puts them into ``template``."""
    numbered = "\n".join(f"{i}. {text}" for i, text in enumerate(responses))
    return template.replace("{responses}", numbered)


def replicas(agents: tuple[AgentSpec, ...]) -> list[int]:
    """Numbers identical agents (same model, temperature, prompt, max_tokens) 0, 1, 2...

    Distinct agents all get 0, so their cache entries do not depend on agent order.
    """
    seen: dict[tuple[str, float, str, int], int] = {}
    numbers = []
    for agent in agents:
        key = (agent.model, agent.temperature, agent.system_prompt, agent.max_tokens)
        numbers.append(seen.get(key, 0))
        seen[key] = numbers[-1] + 1
    return numbers


async def run_moa(
    config: MoAConfig,
    task: str,
    router: Router,
    *,
    sample: int = 0,
    seed: int | None = None,
) -> MoAResult:
    """Runs ``config`` on ``task``: every cycle's agents concurrently, then the main agent.

    Args:
        config: The MoA configuration.
        task: The user prompt every agent receives.
        router: Resolves each model id to a provider.
        sample: Sample index, so repeated runs at temperature > 0 stay distinct in the cache.
        seed: Sampling seed passed to every call.

    Raises:
        ProviderError: A model call failed for good.
    """
    start = time.perf_counter()
    calls: list[CallRecord] = []
    helper_response = ""

    async def call(cycle: int, agent: AgentSpec, name: str, replica: int = 0) -> CallRecord:
        provider, model = router.resolve(agent.model)
        messages = (
            Message("system", fill_helper_response(agent.system_prompt, helper_response)),
            Message("user", task),
        )
        request = ChatRequest(
            model=model,
            messages=messages,
            temperature=agent.temperature,
            max_tokens=agent.max_tokens,
            seed=None if seed is None else seed + _REPLICA_SEED_STRIDE * replica,
            sample=sample,
            replica=replica,
        )
        completion = await provider.complete(request)
        return CallRecord(
            cycle=cycle,
            agent=name,
            model=agent.model,
            temperature=agent.temperature,
            messages=messages,
            response=completion.text,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            latency=completion.latency,
            retries=completion.retries,
            cached=completion.cached,
        )

    for cycle in range(1, config.cycles + 1):
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(call(cycle, agent, agent.name, replica))
                    for agent, replica in zip(
                        config.layer_agents, replicas(config.layer_agents), strict=True
                    )
                ]
        except BaseExceptionGroup as failures:  # one failed call cancels its cycle
            raise failures.exceptions[0] from None
        records = [t.result() for t in tasks]
        calls += records
        helper_response = aggregate(config.aggregation_template, [r.response for r in records])

    final = await call(config.cycles + 1, config.main, MAIN_AGENT)
    calls.append(final)
    return MoAResult(
        answer=final.response, calls=tuple(calls), wall_time=time.perf_counter() - start
    )
