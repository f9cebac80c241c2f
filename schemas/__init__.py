"""One Pandera model per Delta table, and the table catalogue that places each in the lake."""

from schemas.datasets import ExamplesSchema, SplitsSchema
from schemas.deploy import DeploymentHealthSchema, DeploymentsSchema
from schemas.evaluation import EvalResultsSchema, EvalSummariesSchema
from schemas.feedback import (
    CuratedSchema,
    EmbeddingsSchema,
    FeedbackPairsSchema,
    InferenceEventsSchema,
    QualitySchema,
    ReviewsSchema,
    SignalsSchema,
)
from schemas.migrations import LakeMigrationsSchema
from schemas.monitoring import BaselinesSchema, DriftReportsSchema
from schemas.operations import RunFailuresSchema
from schemas.preference import ReferenceLogprobsSchema
from schemas.quarantine import QuarantineSchema
from schemas.registry import (
    AliasesSchema,
    ArtifactsSchema,
    AuditLogSchema,
    LineageEdgesSchema,
    ModelsSchema,
    ModelVersionsSchema,
    PrincipalsSchema,
)
from schemas.spec import TableSpec
from schemas.training import TrainingMetricsSchema, TrainingRunsSchema

EXAMPLES = TableSpec("datasets", "examples", ExamplesSchema, ("dataset", "split", "example_id"), "dataset")
SPLITS = TableSpec("datasets", "splits", SplitsSchema, ("dataset", "split_name", "example_id", "source_split"),
                   "dataset")
TRAINING_RUNS = TableSpec("training", "runs", TrainingRunsSchema, ("run_id",))
TRAINING_METRICS = TableSpec("training", "metrics", TrainingMetricsSchema, ("run_id", "step", "name"))
REFERENCE_LOGPROBS = TableSpec("training", "reference_logprobs", ReferenceLogprobsSchema,
                               ("reference", "dataset", "split", "dataset_version", "pair_id"))
# Partitioned by benchmark only: a handful of fixed values, while model versions grow without bound
# (one folder each would mean many small files); a (model_version, benchmark) slice is still replaced
# by predicate inside its benchmark partition.
EVAL_RESULTS = TableSpec("evaluation", "results", EvalResultsSchema,
                         ("model_version", "benchmark", "example_id", "sample"), "benchmark", schema_version=2)
EVAL_SUMMARIES = TableSpec("evaluation", "summaries", EvalSummariesSchema, ("model_version", "benchmark", "metric"),
                           schema_version=2)
MODEL_VERSIONS = TableSpec("registry", "versions", ModelVersionsSchema, ("model_name", "version"))
LINEAGE_EDGES = TableSpec("registry", "lineage_edges", LineageEdgesSchema, ("source", "target", "relation"))
MODELS = TableSpec("registry", "models", ModelsSchema, ("model_name",))
ARTIFACTS = TableSpec("registry", "artifacts", ArtifactsSchema, ("registration_id", "artifact_type"))
ALIASES = TableSpec("registry", "aliases", AliasesSchema, ("model_name", "alias"))
PRINCIPALS = TableSpec("registry", "principals", PrincipalsSchema, ("name",))
AUDIT_LOG = TableSpec("registry", "audit_log", AuditLogSchema, ("event_id",))
INFERENCE_EVENTS = TableSpec("feedback", "inference_events", InferenceEventsSchema, ("event_id",), "day",
                             schema_version=2)
SIGNALS = TableSpec("feedback", "signals", SignalsSchema, ("event_id", "signal_id"), "day")
QUALITY = TableSpec("feedback", "quality", QualitySchema, ("event_id",), "day")
EMBEDDINGS = TableSpec("feedback", "embeddings", EmbeddingsSchema, ("text_hash",))
CURATED = TableSpec("feedback", "curated", CuratedSchema, ("example_id",))
FEEDBACK_PAIRS = TableSpec("feedback", "preference_pairs", FeedbackPairsSchema, ("pair_id",))
REVIEWS = TableSpec("feedback", "reviews", ReviewsSchema, ("example_id", "reviewer"))
BASELINES = TableSpec("monitoring", "baselines", BaselinesSchema, ("baseline_id",), schema_version=2)
DRIFT_REPORTS = TableSpec("monitoring", "drift_reports", DriftReportsSchema, ("day", "detector", "feature"), "day",
                          schema_version=2)
DEPLOYMENTS = TableSpec("deployment", "deployments", DeploymentsSchema, ("deployment_id",))
DEPLOYMENT_HEALTH = TableSpec("deployment", "health", DeploymentHealthSchema, ("deployment_id", "probed_at"))
QUARANTINE = TableSpec("quarantine", "rows", QuarantineSchema, ("table", "source", "row_hash"), "day",
                       schema_version=3)
RUN_FAILURES = TableSpec("operations", "run_failures", RunFailuresSchema, ("run_id",))
# The lake's own record of applied schema migrations (not a domain table, so not in ALL_TABLES).
LAKE_MIGRATIONS = TableSpec("_crucible", "migrations", LakeMigrationsSchema, ("step_id",))

ALL_TABLES: tuple[TableSpec, ...] = (
    EXAMPLES, SPLITS, TRAINING_RUNS, TRAINING_METRICS, EVAL_RESULTS, EVAL_SUMMARIES, MODELS, MODEL_VERSIONS,
    ARTIFACTS, LINEAGE_EDGES, ALIASES, PRINCIPALS, AUDIT_LOG, INFERENCE_EVENTS, BASELINES, DRIFT_REPORTS,
    QUARANTINE, REFERENCE_LOGPROBS, RUN_FAILURES, SIGNALS, QUALITY, EMBEDDINGS, CURATED, FEEDBACK_PAIRS, REVIEWS,
    DEPLOYMENTS, DEPLOYMENT_HEALTH,
)

__all__ = [name for name in dir() if name.isupper()] + ["TableSpec"]
