"""What every config section shares: the strict base model, the Ray resources of a stage, and the
error a wrong config raises."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.errors import UserError


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Resources(Model):
    """What one actor (or task) of a stage reserves from Ray. Fractions let stages share a core/GPU."""

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    pool_size: int = Field(
        1, ge=1, description="actors (or concurrent tasks) of the stage; the minimum when autoscaling"
    )
    max_pool_size: int | None = Field(
        None, ge=1, description="actor stages: grow the pool up to this many actors as work queues (None: fixed pool)"
    )

    @model_validator(mode="after")
    def _pool_bounds(self) -> "Resources":
        if self.max_pool_size is not None and self.max_pool_size < self.pool_size:
            raise ValueError(f"max_pool_size ({self.max_pool_size}) is below pool_size ({self.pool_size})")
        return self


class ConfigError(UserError, ValueError):
    """A config the user wrote is wrong; the message names the key and what would be valid."""
