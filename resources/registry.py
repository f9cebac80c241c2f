"""The model registry as Dagster runs see it: where artifacts are stored and which principal the runs act as."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from crucible.lake import DeltaLake
from crucible.registry.access import Principal
from crucible.registry.registry import Registry
from crucible.registry.service import SERVICE_NAME, TOKEN_ENV, default_artifact_root, default_token_file
from crucible.registry.storage import ArtifactStore


class RegistryResource(dg.ConfigurableResource):
    """Registered artifacts go to ``artifact_store`` (a folder, ``s3://bucket/prefix`` or ``hf://org/repo``);
    runs act as the principal whose token is ``token`` (pass ``dg.EnvVar("CRUCIBLE_REGISTRY_TOKEN")``).

    Embedded default: with no token configured and no principal in the lake yet, the first use
    bootstraps a local service principal ``dagster`` (trainer + approver) and keeps its token in
    ``token_file`` (mode 0600) for every later run; see ``crucible.registry.service``.
    """

    artifact_store: str = Field(default_factory=default_artifact_root,
                                description="Where registered artifacts are copied: a folder, s3://bucket/prefix "
                                            "or hf://org/repo.")
    token: str | None = Field(None, description=f"The service principal's registry token (from ${TOKEN_ENV}).")
    token_file: str = Field(default_factory=default_token_file,
                            description="Where the bootstrapped service token is kept (used when no token is set).")
    service_name: str = Field(SERVICE_NAME, description="Name of the principal a bootstrap creates.")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, a test server).")
    s3_region: str | None = Field(None, description="Region of the S3 bucket (else boto3's default).")
    aws_access_key_id: str | None = Field(None, description="Otherwise boto3's environment and profile chain.")
    aws_secret_access_key: str | None = Field(None, description="Secret of aws_access_key_id.")
    aws_session_token: str | None = Field(None, description="Temporary-credentials session token, if any.")
    hf_token: str | None = Field(None, description="Hugging Face Hub token for hf:// stores (else $HF_TOKEN).")
    hf_endpoint: str | None = Field(None, description="Hugging Face Hub endpoint (a mirror; else the public hub).")

    def store(self) -> ArtifactStore:
        from crucible.registry.storage import artifact_store

        scheme = self.artifact_store.split("://", 1)[0].lower() if "://" in self.artifact_store else ""
        options = {
            "s3": {"endpoint_url": self.s3_endpoint_url, "region": self.s3_region,
                   "aws_access_key_id": self.aws_access_key_id, "aws_secret_access_key": self.aws_secret_access_key,
                   "aws_session_token": self.aws_session_token},
            "hf": {"token": self.hf_token, "endpoint": self.hf_endpoint},
        }.get(scheme, {})
        return artifact_store(self.artifact_store, **{k: v for k, v in options.items() if v is not None})

    def principal(self, lake: DeltaLake) -> tuple[Principal, str]:
        """The service principal and where its token came from; :class:`AuthenticationError` names the fix."""
        from crucible.registry.service import service_principal

        return service_principal(lake, self.token, self.token_file, token_env=TOKEN_ENV, name=self.service_name)

    def registry(self, lake: DeltaLake) -> Registry:
        """The registry on ``lake`` as the service principal, storing artifacts in :meth:`store`."""
        return Registry(lake, self.principal(lake)[0], self.store())
