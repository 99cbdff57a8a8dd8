"""Request and response shapes of mem0's REST API (for validation and the OpenAPI document).

Responses are documented, not re-validated: the Memory service already builds mem0's shapes
(format_record, format_history), and optional keys stay absent rather than null, as in mem0.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Message(BaseModel):
    role: str = Field("user", description="user, assistant, system or tool")
    content: str
    name: str | None = Field(None, description="stored as the memory's actor_id; at most 256 "
                             "printable characters")


class MemoryCreate(BaseModel):
    messages: list[Message] = Field(..., description="the conversation to remember")
    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    metadata: dict[str, Any] | None = Field(
        None, description="a JSON object, at most 64 KiB and 32 levels deep; integers in the "
        "signed 64-bit range, finite numbers, no NUL")
    # mem0's server declares its optional fields Optional[...] = None: an explicit null is
    # the default, never a 422.
    infer: bool | None = Field(None, description="extract facts with MEMVAULT_LLM (default "
                               "true); without an LLM the messages are stored verbatim and the "
                               'answer says "extraction": "skipped"')
    expiration_date: str | None = Field(None, description="YYYY-MM-DD")
    memory_type: str | None = Field(None, description="at most 256 printable characters")
    prompt: str | None = Field(None, description="custom fact-extraction prompt (infer only)")
    timestamp: int | float | str | None = Field(
        None, description="when the memories were made: Unix seconds or ISO-8601 with offset "
        "(their created_at); default now")


class SearchRequest(BaseModel):
    query: str
    filters: dict[str, Any] | None = Field(
        None, description="mem0 filters; must name user_id, agent_id or run_id")
    top_k: int | None = Field(None, description="default 20")
    limit: int | None = Field(None, description="old name of top_k")
    threshold: float | None = 0.1
    rerank: bool | None = Field(None, description="default false")
    explain: bool | None = Field(None, description="default false")
    show_expired: bool | None = Field(None, description="default false")
    reference_date: int | float | str | None = Field(
        None, description="search as of this date (YYYY-MM-DD, ISO-8601 or Unix seconds): "
        "memories created later are left out, expiry is judged on that date")
    search_mode: str | None = Field(
        None, description="hybrid, vector or keyword; default: the server's MEMVAULT_SEARCH")
    user_id: str | None = Field(None, description="deprecated: merged into filters")
    agent_id: str | None = Field(None, description="deprecated: merged into filters")
    run_id: str | None = Field(None, description="deprecated: merged into filters")


class MemoryUpdate(BaseModel):
    text: str | None = None
    data: str | None = Field(None, description="old name of text")
    metadata: dict[str, Any] | None = None
    expiration_date: str | None = Field(None, description="YYYY-MM-DD; null clears it")


class AddedMemory(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    memory: str
    event: Literal["ADD", "UPDATE", "DELETE", "NONE"]
    actor_id: str | None = None
    role: str | None = None
    previous_memory: str | None = None


class AddResponse(BaseModel):
    results: list[AddedMemory]


class MemoryItem(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    memory: str
    hash: str
    metadata: dict[str, Any] | None
    score: float | None = None
    created_at: str
    updated_at: str
    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    actor_id: str | None = None
    role: str | None = None
    expiration_date: str | None = None
    memory_type: str | None = None
    score_details: dict[str, Any] | None = None


class MemoryList(BaseModel):
    results: list[MemoryItem]


class HistoryItem(BaseModel):
    id: str
    memory_id: str
    old_memory: str | None
    new_memory: str | None
    event: Literal["ADD", "UPDATE", "DELETE"]
    created_at: str | None
    updated_at: str | None
    is_deleted: bool
    actor_id: str | None
    role: str | None


class Entity(BaseModel):
    id: str
    type: Literal["user", "agent", "run"]
    total_memories: int
    created_at: str
    updated_at: str


class MessageResponse(BaseModel):
    message: str


class ErrorResponse(BaseModel):
    detail: Any
    code: str | None = None
    request_id: str | None = None
