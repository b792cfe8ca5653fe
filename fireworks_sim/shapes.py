"""Each collection's answer in the shape of its SDK model: field lists and renderers.

Only keys the model defines, every required key, proto3 JSON values (int64 as strings,
empty values omitted). `tests/contract/test_sdk_oracle.py` proves these shapes against the SDK.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, Protocol

from fireworks_sim.model import (
    DEFAULT_ACCELERATOR,
    STATE_PREFIX,
    UPDATE_TIME_COLLECTIONS,
    WANDB_COLLECTIONS,
    _Account,
    _Resource,
    _rfc3339,
)

# Secrets the real API may echo; the watcher must never pass them on.
SIGNED_LOGS_URL = "https://storage.example/logs?X-Goog-Signature=sim-signature"
SIGNED_METRICS_URL = "https://storage.example/metrics.jsonl?X-Goog-Signature=sim-metrics-signature"
ROUTE_API_KEY = "sim-route-secret"


#: Top-level fields of each collection's SDK model (JSON names), copied by hand from
#: `fireworks/types/*.py`. A `readMask` may name only these; the oracle tests compare them.
FIELDS: dict[str, frozenset[str]] = {
    collection: frozenset(names.split())
    for collection, names in {
        "dpoJobs": """awsS3Config azureBlobStorageConfig completedTime createTime createdBy
            dataset displayName lossConfig name rendererHuggingFaceRepoId reservationTarget
            state status trainerLogsSignedUrl trainingConfig useReservation wandbConfig""",
        "supervisedFineTuningJobs": """awsS3Config azureBlobStorageConfig baseModel batchSize
            batchSizeSamples completedTime createTime createdBy dataset displayName earlyStop
            epochs estimatedCost evalAutoCarveout evaluationDataset gradientAccumulationSteps
            isTurbo jinjaTemplate jobProgress learningRate learningRateWarmupSteps loraRank
            maxContextLength metricsFileSignedUrl mtpEnabled mtpFreezeBaseModel
            mtpNumDraftTokens name nodes optimizerWeightDecay outputModel region
            rendererHuggingFaceRepoId reservationTarget samplerCheckpointSaveIntervalSteps
            state status trainerLogsSignedUrl updateTime usePurpose useReservation wandbConfig
            warmStartFrom""",
        "reinforcementFineTuningJobs": """acceleratorSeconds awsS3Config azureBlobStorageConfig
            chunkSize completedTime createTime createdBy dataset displayName evalAutoCarveout
            evaluationDataset evaluator inferenceParameters jobProgress lossConfig
            maxConcurrentEvaluations maxConcurrentRollouts maxInferenceReplicaCount mcpServer
            name nodeCount outputMetrics outputStats reservationTarget state status
            trainerLogsSignedUrl trainingConfig wandbConfig""",
        "rlorTrainerJobs": """acceleratorSeconds awsS3Config azureBlobStorageConfig completedTime
            createTime createdBy dataset directRouteHandle displayName evalAutoCarveout
            evaluationDataset forwardOnly hotLoadDeploymentId jobProgress keepAlive lossConfig
            name nodeCount rewardWeights rolloutDeploymentName serviceMode state status
            trainingConfig usePurpose wandbConfig""",
        "batchInferenceJobs": """continuedFromJobName createTime createdBy displayName
            inferenceParameters inputDatasetId jobProgress model name outputDatasetId precision
            state status updateTime""",
        "evaluationJobs": """awsS3Config createTime createdBy displayName evaluator inputDataset
            metrics name outputDataset outputStats state status updateTime""",
        "evaluators": """commitHash createTime createdBy criteria defaultDataset description
            displayName entryPoint name requirements source state status updateTime""",
        "deployments": """acceleratorCount acceleratorType activeModelVersion autoTune
            autoscalingPolicy baseModel cluster createTime deleteTime deploymentShape
            deploymentTemplate description desiredReplicaCount directRouteApiKeys
            directRouteHandle directRouteType disableDeploymentSizeValidation displayName
            draftModel draftTokenCount enableAddons enableHotLoad enableHotReloadLatestAddon
            enableMtp enableSessionAffinity expireTime hotLoadBucketType hotLoadBucketUrl
            maxContextLength maxReplicaCount maxWithRevocableReplicaCount minReplicaCount name
            ngramSpeculationLength numPeftDeviceCached placement precision pricingPlanId
            purgeTime region replicaCount replicaStats state status targetModelVersion
            updateTime""",
        "deployedModels": """createTime default deployment description displayName model name
            public serverless state status updateTime""",
        "models": """baseModelDetails calibrated cluster contextLength conversationConfig
            createTime defaultDraftModel defaultDraftTokenCount defaultSamplingParams
            deployedModelRefs deprecationDate description displayName fineTuningJob githubUrl
            huggingFaceUrl importedFrom kind name peftDetails public rlTunable snapshotType
            state status supportedPrecisions supportedPrecisionsWithCalibration
            supportsImageInput supportsLora supportsServerless supportsTools teftDetails
            trainingContextLength tunable updateTime useHfApplyChatTemplate""",
        "datasets": """averageTurnCount createTime createdBy displayName estimatedTokenCount
            evalProtocol evaluationResult exampleCount externalUrl format name sourceJobName
            splitted state status transformed updateTime userUploaded""",
    }.items()
}


#: Top-level fields of the SDK's `Account` (JSON names), copied by hand from
#: `fireworks/types/account.py`; the account's `readMask` may name only these.
ACCOUNT_FIELDS: frozenset[str] = frozenset(
    [
        "accountType",
        "createTime",
        "displayName",
        "email",
        "name",
        "state",
        "status",
        "suspendState",
        "updateTime",
    ]
)


def render_account(account: _Account) -> dict[str, Any]:
    """The account as proto3 JSON in the SDK's `Account` shape (`email` is required).

    `suspendState` is sent even when UNSUSPENDED: the SDK's Literal does not say which value
    is the enum's zero, so the simulator does not guess that the API omits it."""
    out: dict[str, Any] = _omit_empty(
        {
            "name": f"accounts/{account.account_id}",
            "displayName": account.display_name,
            "email": account.email,
            "accountType": "ACCOUNT_TYPE_UNSPECIFIED",
            "createTime": _rfc3339(account.create_time),
            "updateTime": _rfc3339(account.update_time),
            "state": account.state,
            "suspendState": account.suspend_state,
        }
    )
    out["status"] = {"code": "OK", "message": account.status_message}
    return out


class Owner(Protocol):
    """What rendering reads from the simulator: its account and the secrets it echoes."""

    @property
    def account_id(self) -> str: ...

    @property
    def wandb_api_key(self) -> str: ...

    @property
    def route_api_key(self) -> str: ...


def _omit_empty(value: Any) -> Any:
    """proto3 JSON: drop None, empty strings and empty objects or lists, at every depth."""
    if isinstance(value, dict):
        pruned = {key: _omit_empty(item) for key, item in value.items()}
        return {key: item for key, item in pruned.items() if item not in (None, "", {}, [])}
    if isinstance(value, list):
        return [_omit_empty(item) for item in value]
    return value


def _nonzero(number: int | None) -> int | None:
    """proto3 JSON omits a zero number; None (then dropped) stands for it."""
    return number or None


def render(sim: Owner, job: _Resource) -> dict[str, Any]:
    """The resource as proto3 JSON in its collection's SDK shape; empty fields omitted."""
    account = sim.account_id
    name = f"accounts/{account}/{job.collection}/{job.job_id}"
    document: dict[str, Any] = {"name": name, "displayName": job.display_name}
    document.update(_RENDERERS[job.collection](sim, job))
    document["createTime"] = _rfc3339(job.create_time)
    if job.collection in UPDATE_TIME_COLLECTIONS:
        document["updateTime"] = _rfc3339(job.update_time)
    if job.completed_time is not None:
        document["completedTime"] = _rfc3339(job.completed_time)
    if job.delete_time is not None:
        document["deleteTime"] = _rfc3339(job.delete_time)
    document["state"] = job.state
    if "createdBy" in FIELDS[job.collection]:
        document["createdBy"] = job.created_by
    if job.wandb and job.collection in WANDB_COLLECTIONS:
        document["wandbConfig"] = {
            "enabled": True,
            "apiKey": sim.wandb_api_key,
            "project": "sim-project",
            "entity": "sim-entity",
            "runId": job.job_id,
            "url": f"https://wandb.ai/sim-entity/sim-project/runs/{job.job_id}",
        }
    out: dict[str, Any] = _omit_empty(document)
    # status mimics google.rpc.Status; the gateway sends it whole, OK included.
    out["status"] = {"code": job.status_code, "message": job.status_message}
    return out


def _training_config(job: _Resource) -> dict[str, Any]:
    return {
        "baseModel": job.base_model,
        "outputModel": job.output_model,
        "epochs": _nonzero(job.epochs),
        "learningRate": job.learning_rate,
        "loraRank": 8,
        "maxContextLength": 8192,
        "region": "US_IOWA_1",
    }


def _job_progress(job: _Resource) -> dict[str, Any] | None:
    if job.progress is None:
        return None
    percent = math.floor(job.progress)
    progress: dict[str, Any] = {"percent": _nonzero(percent), "epoch": _nonzero(job.epoch)}
    if job.collection == "batchInferenceJobs":
        total = 1000
        processed = total * percent // 100
        failed = processed // 50
        progress |= {
            "totalInputRequests": total,
            "totalProcessedRequests": _nonzero(processed),
            "successfullyProcessedRequests": _nonzero(processed - failed),
            "failedRequests": _nonzero(failed),
            "outputRows": _nonzero(processed - failed),
            "inputTokens": _nonzero(processed * 420),
            "outputTokens": _nonzero(processed * 180),
        }
    return progress


def _accelerator_seconds(job: _Resource) -> dict[str, str] | None:
    # int64 values travel as JSON strings.
    seconds = job.accelerator_seconds
    return None if seconds is None else {kind: str(n) for kind, n in seconds.items()}


def _render_dpo(sim: Owner, job: _Resource) -> dict[str, Any]:
    return {
        "dataset": job.dataset,
        "trainingConfig": _training_config(job),
        "lossConfig": {"method": "DPO", "dpo": {"beta": 0.1}},
        "trainerLogsSignedUrl": SIGNED_LOGS_URL,
    }


def _render_sft(sim: Owner, job: _Resource) -> dict[str, Any]:
    cost = job.estimated_cost_usd
    estimated: dict[str, Any] | None = None
    if cost is not None:
        units = math.floor(cost)
        nanos = round((cost - units) * 1e9)
        estimated = {
            "currencyCode": "USD",
            "units": str(units) if units else None,
            "nanos": _nonzero(nanos),
        }
    return {
        "dataset": job.dataset,
        "baseModel": job.base_model,
        "outputModel": job.output_model,
        "epochs": _nonzero(job.epochs),
        "learningRate": job.learning_rate,
        "loraRank": 8,
        "maxContextLength": 8192,
        "region": "US_IOWA_1",
        "jobProgress": _job_progress(job),
        "estimatedCost": estimated,
        "trainerLogsSignedUrl": SIGNED_LOGS_URL,
        "metricsFileSignedUrl": SIGNED_METRICS_URL,
    }


def _render_rft(sim: Owner, job: _Resource) -> dict[str, Any]:
    return {
        "dataset": job.dataset,
        "evaluator": job.evaluator,
        "trainingConfig": _training_config(job),
        "lossConfig": {"method": "GRPO", "klBeta": 0.01},
        "inferenceParameters": {
            "maxOutputTokens": 2048,
            "temperature": 1.0,
            "responseCandidatesCount": 4,
        },
        "jobProgress": _job_progress(job),
        "acceleratorSeconds": _accelerator_seconds(job),
        "nodeCount": 1,
        "trainerLogsSignedUrl": SIGNED_LOGS_URL,
    }


def _render_rlor(sim: Owner, job: _Resource) -> dict[str, Any]:
    return {
        "dataset": job.dataset,
        "trainingConfig": _training_config(job),
        "lossConfig": {"method": "GRPO"},
        "jobProgress": _job_progress(job),
        "acceleratorSeconds": _accelerator_seconds(job),
        "keepAlive": True,
        "nodeCount": 1,
    }


def _render_batch(sim: Owner, job: _Resource) -> dict[str, Any]:
    return {
        "model": job.model,
        "inputDatasetId": job.dataset,
        "outputDatasetId": f"accounts/{sim.account_id}/datasets/{job.job_id}-output",
        "inferenceParameters": {"maxTokens": 1024, "temperature": 0.7},
        "jobProgress": _job_progress(job),
    }


def _render_evaluation(sim: Owner, job: _Resource) -> dict[str, Any]:
    done = job.state == STATE_PREFIX + "COMPLETED"
    return {
        "evaluator": job.evaluator,
        "inputDataset": job.dataset,
        "outputDataset": f"accounts/{sim.account_id}/datasets/{job.job_id}-output",
        "metrics": {"accuracy": 0.87, "reward": 0.5} if done else None,
        "outputStats": json.dumps({"rows": 1000, "meanScore": 0.87}) if done else None,
    }


def _render_evaluator(sim: Owner, job: _Resource) -> dict[str, Any]:
    return {
        "description": f"Simulated evaluator {job.job_id}",
        "defaultDataset": job.dataset,
        "entryPoint": "main.py::evaluate",
        "source": {"type": "TYPE_UPLOAD"},
        "criteria": [
            {
                "name": "accuracy",
                "type": "CODE_SNIPPETS",
                "description": "Exact match against the reference answer",
                "codeSnippets": {
                    "language": "python",
                    "entryFile": "main.py",
                    "entryFunc": "evaluate",
                },
            }
        ],
    }


def _render_deployment(sim: Owner, job: _Resource) -> dict[str, Any]:
    replicas = job.replica_count
    if replicas is None:
        replicas = 1 if job.state in ("READY", "UPDATING") else 0
    return {
        "baseModel": job.model,
        "description": f"Simulated deployment {job.job_id}",
        "replicaCount": _nonzero(replicas),
        "desiredReplicaCount": _nonzero(replicas),
        "maxReplicaCount": max(4, replicas),
        "acceleratorType": DEFAULT_ACCELERATOR,
        "acceleratorCount": 1,
        "precision": "FP8",
        "autoscalingPolicy": {
            "scaleUpWindow": "30s",
            "scaleDownWindow": "600s",
            "scaleToZeroWindow": "3600s",
            "loadTargets": {"default": 0.8},
        },
        "replicaStats": {"readyReplicaCount": _nonzero(replicas)},
        "directRouteType": "INTERNET",
        "directRouteApiKeys": [sim.route_api_key],
        "enableAddons": True,
    }


def _render_deployed_model(sim: Owner, job: _Resource) -> dict[str, Any]:
    return {"model": job.model, "deployment": job.deployment, "default": True}


def _render_model(sim: Owner, job: _Resource) -> dict[str, Any]:
    return {
        "description": f"Simulated fine-tuned model {job.job_id}",
        "kind": "HF_PEFT_ADDON",
        # The job that made it: the watcher's owner of a model is that job's creator.
        "fineTuningJob": job.fine_tuning_job,
        "peftDetails": {
            "baseModel": job.base_model,
            "r": 8,
            "targetModules": ["q_proj", "v_proj"],
        },
        "contextLength": 8192,
    }


def _render_dataset(sim: Owner, job: _Resource) -> dict[str, Any]:
    ready = job.state == "READY"
    return {
        "format": "CHAT",
        # int64 counts travel as JSON strings.
        "exampleCount": "1000" if ready else None,
        "estimatedTokenCount": "420000" if ready else None,
    }


_RENDERERS: dict[str, Callable[[Owner, _Resource], dict[str, Any]]] = {
    "dpoJobs": _render_dpo,
    "supervisedFineTuningJobs": _render_sft,
    "reinforcementFineTuningJobs": _render_rft,
    "rlorTrainerJobs": _render_rlor,
    "batchInferenceJobs": _render_batch,
    "evaluationJobs": _render_evaluation,
    "evaluators": _render_evaluator,
    "deployments": _render_deployment,
    "deployedModels": _render_deployed_model,
    "models": _render_model,
    "datasets": _render_dataset,
}
