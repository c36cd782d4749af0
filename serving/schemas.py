"""Request and response models of the model server.

A request carries what a booking system knows before departure. Codes are
upper-cased before they are checked. `sched_dep_ts` is the scheduled departure as
an ISO 8601 datetime WITH a UTC offset (`2013-03-01T13:00:00Z` or
`2013-03-01T08:00:00-05:00`); a naive datetime is rejected with a 422, because the
same wall-clock time means different instants in local and UTC time. Unknown
fields are rejected too, so a misspelt field never passes silently.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Body
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

MAX_BATCH = 1000


class FlightRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={"examples": [{
            "carrier": "UA", "flight": 1545, "tailnum": "N14228", "origin": "EWR", "dest": "IAH",
            "sched_dep_ts": "2013-03-01T10:15:00Z", "distance": 1400,
        }]},
    )

    carrier: str = Field(pattern=r"^[A-Z0-9]{2}$", description="Two-character airline code, e.g. UA")
    flight: int = Field(ge=1, le=99_999, description="Flight number")
    tailnum: str | None = Field(
        default=None, pattern=r"^[A-Z0-9]{2,10}$",
        description="Aircraft tail number; null when not yet assigned (plane features are then missing)",
    )
    origin: str = Field(pattern=r"^[A-Z]{3}$", description="Departure airport, IATA code")
    dest: str = Field(pattern=r"^[A-Z]{3}$", description="Arrival airport, IATA code")
    sched_dep_ts: AwareDatetime = Field(description="Scheduled departure, ISO 8601 with a UTC offset")
    distance: float = Field(gt=0, le=20_000, description="Great-circle distance in miles")
    request_id: str | None = Field(default=None, max_length=64, description="Optional id echoed and logged")
    as_of: AwareDatetime | None = Field(
        default=None,
        description="The time the prediction is asked at (ISO 8601 with a UTC offset); features count only if "
                    "known by then and not older than their view's TTL. Default: when the request arrives. "
                    "A replay sends its simulated clock.",
    )

    @field_validator("carrier", "tailnum", "origin", "dest", mode="before")
    @classmethod
    def _upper(cls, value):
        return value.upper() if isinstance(value, str) else value

    @property
    def route(self) -> str:
        return f"{self.origin}-{self.dest}"

    def entity_row(self) -> dict[str, str | None]:
        return {"origin": self.origin, "tailnum": self.tailnum, "carrier": self.carrier, "route": self.route}


BatchRequest = Annotated[list[FlightRequest], Body(min_length=1, max_length=MAX_BATCH)]


class Prediction(BaseModel):
    request_id: str
    flight_id: str = Field(description="Same id as the labelled flight table: carrier+flight-origin-UTC stamp")
    probability: float = Field(description="Probability of arriving more than 15 minutes late (or cancelled)")
    prediction: int = Field(description="1 when probability >= threshold, else 0")
    decision: Literal["late", "on_time"]
    threshold: float
    model_name: str
    model_version: str
    unknown_entities: list[str] = Field(
        description="Entity keys with no row in the online store; their features were treated as missing"
    )
    stale_views: list[str] = Field(
        default_factory=list,
        description="Feature views whose value was not known at the as-of time or older than the view's TTL; "
                    "their features were treated as missing",
    )


class BatchPrediction(BaseModel):
    model_name: str
    model_version: str
    predictions: list[Prediction]


class VersionInfo(BaseModel):
    model_name: str
    version: str
    alias: str
    run_id: str
    threshold: float
    loaded_at: str


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    ready: bool = Field(description="True when /predict can answer: a model is loaded and features resolve")
    model_version: str | None
    features_ready: bool
    reason: str | None = Field(description="Why the server is not ready, when it is not")
    last_reload_error: str | None
    inference_log_pending: int
    rollout: Literal["shadow", "canary"] | None = Field(
        default=None, description="A candidate beside production: its mode (details at GET /admin/rollout)")
    canary_version: str | None = Field(
        default=None, description="The version answering the canary share (a shadow's version is never shown)")


class CandidateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(pattern=r"^[0-9]+$", description="The registered version to put beside production")
    mode: Literal["shadow", "canary"] = Field(description="shadow: scores live requests, never answers; "
                                                          "canary: answers its share of the flights")
    share: float | None = Field(default=None, gt=0, le=1,
                                description="Canary share of flights (default MLOPS_CANARY_SHARE)")


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(pattern=r"^[0-9]+$")


class RolloutCountsInfo(BaseModel):
    since: str
    main_answered: int
    canary_answered: int
    canary_errors: int
    shadow_scored: int
    shadow_dropped: int
    shadow_errors: int


class RolloutState(BaseModel):
    production_version: str | None
    candidate_version: str | None
    mode: Literal["shadow", "canary"] | None
    share: float | None
    counts: RolloutCountsInfo | None
    shadow_pending: int | None  # rows the shadow has not scored yet; None: no shadow


class ReloadResult(BaseModel):
    model_name: str
    version: str | None
    previous_version: str | None
    changed: bool
