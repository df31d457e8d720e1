#!/usr/bin/env python3
"""Writes docs/openapi.json (the OpenAPI 3.1 document of `vex-lens serve`).

The document is the source of truth checked in; this script only keeps it tidy. A test
(tests/api_embedded.rs, src/http tests) checks that every served route is in it."""
import json, pathlib

def err(desc):
    return {"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}

def ok(schema, desc="OK"):
    return {"description": desc, "content": {"application/json": {"schema": schema}}}

ref = lambda n: {"$ref": f"#/components/schemas/{n}"}
qp = lambda name, desc, schema=None, required=False: {
    "name": name, "in": "query", "required": required, "description": desc,
    "schema": schema or {"type": "string", "minLength": 1, "maxLength": 1024},
}
TENANT = {"name": "X-Tenant", "in": "header", "required": False,
          "description": "Tenant to act for (default: the token's only tenant; `default` on loopback without tokens).",
          "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$"}}
STATUS = {"type": "string", "enum": ["affected", "not_affected", "fixed", "under_investigation", "disputed", "inconclusive"]}
PAGE = [qp("page_size", "Page size (1..=1000).", {"type": "integer", "minimum": 1, "maximum": 1000}),
        qp("page_token", "Opaque cursor from the previous page's next_page_token.")]
TIER = {"type": "string", "enum": ["authoritative", "trusted", "known", "unknown", "untrusted"]}
MODE = {"type": "string", "enum": ["weighted_vote", "lattice", "highest_weight", "authoritative_first", "most_recent"]}
# The knobs a change may name (the handler refuses any other, and values out of range).
KNOBS = {"type": "object", "additionalProperties": False, "properties": {
    "unsigned_penalty": {"type": "number", "minimum": 0, "maximum": 1},
    "half_life_days": {"type": "number", "exclusiveMinimum": 0},
    "freshness_floor": {"type": "number", "minimum": 0, "maximum": 1},
    "unjustified_not_affected_factor": {"type": "number", "minimum": 0, "maximum": 1},
    "require_justification_for_not_affected": {"type": "boolean"},
    "minimum_weight": {"type": "number", "minimum": 0, "maximum": 1},
    "conflict_threshold": {"type": "number", "minimum": 0, "maximum": 1}}}
# An issuer id: 1 to 256 characters, not only whitespace (the handler trims it).
ISSUER_ID = {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "\\S"}
# A change names what it changes: an issuer change a tier or a weight, a policy change a
# mode or at least one knob (else 400).
ISSUER_NAMES = [{"required": ["tier"]}, {"required": ["weight"]}]
POLICY_NAMES = [{"required": ["mode"]}, {"required": ["knobs"], "properties": {"knobs": {"minProperties": 1}}}]
AUTHERR = {"400": err("A parameter is invalid (the message names it)."),
           "401": err("Missing or unknown bearer token."),
           "403": err("Token lacks the scope or tenant; or no tokens configured and the caller is not on loopback."),
           "404": err("Not found."),
           "414": err("Query string too long."),
           "503": err("Store unavailable.")}

def v1(op_id, summary, params, responses, scope="vex:read", body=None):
    o = {"operationId": op_id, "summary": summary, "security": [{"bearer": [scope]}, {}],
         "parameters": [TENANT] + params, "responses": {**responses, **AUTHERR}}
    if body:
        o["requestBody"] = body
    return o

TRUST_ERRORS = {"409": err("Changed concurrently by another instance: retry."),
                "413": err("Body too large."),
                "429": err("Too many trust changes for the tenant this minute (api.admin_changes_per_minute); see Retry-After.")}

artifact = lambda req: qp("artifact", "Artifact identifier (purl, CPE, BOM-Link, hash, name key); any spelling normalising to the same key.", required=req)
vuln = lambda req: qp("vulnerability", "Vulnerability key (e.g. CVE-2024-1234).", required=req)

doc = {
    "openapi": "3.1.0",
    "info": {"title": "VEX Lens API", "version": "1.0.0",
             "description": "Trust-weighted consensus over VEX statements. Errors are {\"error\": {\"code\", \"message\"}}."},
    "servers": [{"url": "http://127.0.0.1:8080"}],
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                       "description": "Tokens from [[api.tokens]] (stored as SHA-256). Scopes vex:read, vex:export, vex:admin (all)."}},
        "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {"code": {"type": "string", "enum": [
                    "invalid_parameter", "invalid_body", "body_too_large", "query_too_long", "missing_token",
                    "invalid_token", "insufficient_scope", "tenant_forbidden", "loopback_only", "not_found",
                    "method_not_allowed", "unavailable", "export_failed", "nothing_to_export", "rate_limited", "conflict", "internal"]},
                    "message": {"type": "string"}}}}},
            "TenantTrust": {"type": "object", "required": ["tenant", "epoch"],
                            "description": "A tenant's trust settings changed through the API (layered over config/issuers.toml and [consensus]).",
                            "properties": {"tenant": {"type": "string"}, "epoch": {"type": "integer", "minimum": 0},
                                           "issuers": {"type": "object", "additionalProperties": {"type": "object",
                                               "properties": {"tier": {"type": "string"}, "weight": {"type": "number"}}}},
                                           "mode": {"type": "string"}, "knobs": {"type": "object"}}},
            "TrustChangeApplied": {"type": "object",
                                   "required": ["tenant", "applied", "epoch", "policy_version_before", "policy_version", "before", "after", "recomputed"],
                                   "properties": {"tenant": {"type": "string"}, "applied": {"const": True},
                                                  "epoch": {"type": "integer", "minimum": 1},
                                                  "policy_version_before": {"type": "string"}, "policy_version": {"type": "string"},
                                                  "mode": {"type": "string"}, "knobs": {"type": "object"},
                                                  "before": ref("TenantTrust"), "after": ref("TenantTrust"),
                                                  "issuer": {"type": "object", "properties": {"id": {"type": "string"}, "tier": {"type": "string"},
                                                                                              "weight_ppm": {"type": "integer"}}},
                                                  "recomputed": {"type": "object", "required": ["packages", "pairs"],
                                                                 "properties": {"packages": {"type": "integer"}, "pairs": {"type": "integer"}}},
                                                  "duration_ms": {"type": "integer"}}},
            "ConsensusRecord": {"type": "object",
                                "description": "A consensus record (schemas/consensus-record.schema.json) plus changed_at_ms, the time it was written.",
                                "required": ["tenant", "artifact", "package", "vulnerability", "status", "confidence_ppm",
                                             "mode", "policy_version", "statements", "conflicts", "consensus_digest", "changed_at_ms"],
                                "properties": {"tenant": {"type": "string"}, "artifact": {"type": "string"},
                                               "package": {"type": "string"}, "vulnerability": {"type": "string"},
                                               "status": STATUS, "confidence_ppm": {"type": "integer", "minimum": 0, "maximum": 1000000},
                                               "mode": {"type": "string"}, "policy_version": {"type": "string"},
                                               "statements": {"type": "array", "items": ref("Statement")},
                                               "conflicts": {"type": "array", "items": {"type": "object"}},
                                               "consensus_digest": {"type": "string"},
                                               "changed_at_ms": {"type": "integer"}}},
            "Statement": {"type": "object",
                          "description": "One statement of a record (schema version 5: lean). Its own text (impact_statement, "
                                         "action_statement, document_id, document_version, document_digest, format, scope, "
                                         "position, status_original, justification_original, issuer_claimed) moved into the "
                                         "observation; explain joins it back under `observation`.",
                          "required": ["observation_id", "artifact", "issuer", "tier", "signature", "status", "timestamp",
                                       "role", "weight_ppm", "factors"],
                          "properties": {"observation_id": {"type": "string"}, "artifact": {"type": "string"},
                                         "issuer": {"type": "string"}, "tier": {"type": "string"},
                                         "signature": {"type": "string"}, "status": {"type": "string"},
                                         "justification": {"type": "string"}, "timestamp": {"type": "string"},
                                         "role": {"type": "string", "enum": ["counted", "superseded", "excluded", "retracted"]},
                                         "reason": {"type": "object", "required": ["code"],
                                                    "description": "Why superseded, excluded or retracted: code signature_failed "
                                                                   "(signature_reason), not_affected_without_justification, "
                                                                   "superseded or more_conservative (superseded_by: an observation id), "
                                                                   "retracted (retracted_by: document digests, version).",
                                                    "properties": {"code": {"type": "string", "enum": [
                                                        "signature_failed", "not_affected_without_justification",
                                                        "superseded", "more_conservative", "retracted"]}}},
                                         "weight_ppm": {"type": "integer", "minimum": 0},
                                         "factors": {"type": "object"},
                                         "observation": {"type": "object",
                                                         "description": "Explain only: the observation's own text (the moved fields, same names)."}}},
            "RecordPage": {"type": "object", "required": ["items"], "properties": {
                "items": {"type": "array", "items": ref("ConsensusRecord")},
                "next_page_token": {"type": "string"}}},
            "Explained": {"allOf": [ref("ConsensusRecord"), {"type": "object", "required": ["trace", "trace_matches_record"],
                "properties": {"trace": {"type": "array", "items": {"type": "string"}},
                               "trace_matches_record": {"type": "boolean"}}}]},
            "OpenConflict": {"type": "object", "required": ["artifact", "package", "vulnerability", "status",
                                                           "consensus_digest", "changed_at_ms", "age_seconds", "conflicts"],
                             "properties": {"artifact": {"type": "string"}, "package": {"type": "string"},
                                            "vulnerability": {"type": "string"}, "status": STATUS,
                                            "consensus_digest": {"type": "string"}, "changed_at_ms": {"type": "integer"},
                                            "age_seconds": {"type": "integer", "minimum": 0},
                                            "conflicts": {"type": "array", "items": {"type": "object",
                                                "required": ["reason", "detail", "issuers", "sides"],
                                                "properties": {"reason": {"type": "string"}, "detail": {"type": "string"},
                                                               "issuers": {"type": "array", "items": {"type": "string"}},
                                                               "sides": {"type": "array", "items": {"type": "object",
                                                                   "required": ["status", "issuers", "weight_ppm"],
                                                                   "properties": {"status": {"type": "string"},
                                                                                  "issuers": {"type": "array", "items": {"type": "string"}},
                                                                                  "weight_ppm": {"type": "integer", "minimum": 0}}}}}}}}},
            "ConflictPage": {"type": "object", "required": ["items"], "properties": {
                "items": {"type": "array", "items": ref("OpenConflict")}, "next_page_token": {"type": "string"}}},
            "ExportJob": {"type": "object", "required": ["job_id", "format", "started_at_ms", "duration_ms", "result", "records"],
                          "properties": {"job_id": {"type": "string"}, "format": {"type": "string", "enum": ["json", "ndjson", "openvex"]},
                                         "tenant": {"type": ["string", "null"]}, "since_ms": {"type": ["integer", "null"]},
                                         "started_at_ms": {"type": "integer"}, "duration_ms": {"type": "integer", "minimum": 0},
                                         "result": {"type": "string", "enum": ["success", "failure"]},
                                         "error": {"type": ["string", "null"]}, "bundle_id": {"type": ["string", "null"]},
                                         "records": {"type": "integer", "minimum": 0},
                                         "manifest": {"type": "object"},
                                         "files": {"type": "array", "items": {"type": "string"}}}},
            "Feed": {"type": "object",
                     "description": "A configured CSAF feed of the tenant: its settings, its health on this instance and what its state says (times in ms since the epoch).",
                     "required": ["name", "kind", "url", "issuer", "enabled", "interval", "health", "last_attempt_ms",
                                  "last_success_ms", "last_error", "watermark_ms", "documents", "outcomes", "failing",
                                  "next_retry_ms", "directories"],
                     "properties": {"name": {"type": "string"}, "kind": {"type": "string", "enum": ["csaf"]},
                                    "url": {"type": "string", "description": "As configured: a domain or the metadata URL."},
                                    "issuer": {"type": "string"}, "enabled": {"type": "boolean"},
                                    "interval": {"type": "string"},
                                    "health": {"type": ["string", "null"], "enum": ["pending", "ok", "failing", None],
                                               "description": "On this instance; null when it does not run the feed (disabled)."},
                                    "last_attempt_ms": {"type": ["integer", "null"], "description": "When the last run ended."},
                                    "last_success_ms": {"type": ["integer", "null"], "description": "When the last run without a feed-level failure ended."},
                                    "last_error": {"oneOf": [{"type": "null"}, {"type": "object", "required": ["code", "message", "at_ms"],
                                                   "properties": {"code": {"type": "string", "enum": [
                                                       "metadata_invalid", "foreign_directory", "no_directory",
                                                       "publisher_mismatch", "fetch_failed", "state_failed"]},
                                                                  "message": {"type": "string"}, "at_ms": {"type": "integer"}}}],
                                                   "description": "The last run's feed-level failure (null once a run succeeds)."},
                                    "watermark_ms": {"type": ["integer", "null"], "description": "The lowest watermark of its directories."},
                                    "documents": {"type": "integer", "minimum": 0, "description": "Documents tracked in its state."},
                                    "outcomes": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0},
                                                 "description": "Documents by outcome: emitted, dead_lettered, skipped, rejected, failed."},
                                    "failing": {"type": "integer", "minimum": 0, "description": "Documents failed, owed a retry."},
                                    "next_retry_ms": {"type": ["integer", "null"], "description": "The earliest retry owed."},
                                    "directories": {"type": "array", "items": {"type": "object",
                                        "required": ["url", "synced", "watermark_ms", "documents", "failing", "next_retry_ms"],
                                        "properties": {"url": {"type": "string"}, "synced": {"type": "boolean"},
                                                       "watermark_ms": {"type": ["integer", "null"]},
                                                       "documents": {"type": "integer", "minimum": 0},
                                                       "failing": {"type": "integer", "minimum": 0},
                                                       "next_retry_ms": {"type": ["integer", "null"]}}}},
                                    "state_error": {"type": "string", "description": "Present when its state could not be read."}}},
            "ExportBody": {"type": "object", "additionalProperties": False, "properties": {
                "format": {"type": "string", "enum": ["json", "ndjson", "openvex"]},
                "tenant": {"type": "string", "description": "Must equal the caller's tenant."},
                "since": {"type": "string", "format": "date-time"}}},
        },
    },
    "paths": {
        "/health/liveness": {"get": {"operationId": "liveness", "summary": "Process is serving.", "security": [],
                                      "responses": {"200": ok({"type": "object"})}}},
        "/health/readiness": {"get": {"operationId": "readiness", "summary": "Store (and broker) reachable.", "security": [],
                                       "responses": {"200": ok({"type": "object"}), "503": ok({"type": "object"}, "Not ready.")}}},
        "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus/OpenMetrics text.", "security": [],
                              "responses": {"200": {"description": "Metrics", "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}}}}},
        "/status": {"get": {"operationId": "status", "summary": "Version, mode, store, feature flags.", "security": [],
                             "responses": {"200": ok({"type": "object"})}}},
        "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document.", "security": [],
                                   "responses": {"200": ok({"type": "object"})}}},
        "/v1/vex/consensus": {"get": v1("getConsensus",
            "One pair's record (artifact and vulnerability only), else a page of records.",
            [artifact(False), vuln(False), qp("package", "Package identifier (every artifact of the package)."),
             qp("status", "Consensus status.", STATUS), qp("issuer", "Issuer id with a statement on the record."),
             qp("since", "Only records written at or after (RFC 3339).", {"type": "string", "format": "date-time"})] + PAGE,
            {"200": {**ok({"oneOf": [ref("RecordPage"), ref("ConsensusRecord")]},
                          "The pair's stored record, or a page. A pair with no stored record whose artifact some "
                          "stored statements apply to (a scanner's concrete package: version-less claims, ranges "
                          "containing its version, its platform's) is answered with the record derived from them on "
                          "request, not stored, marked by the header vexlens-derived: true."),
                     "headers": {"vexlens-derived": {"description": "true when the record was derived on request (not stored).",
                                                      "schema": {"type": "string", "enum": ["true"]}}}}})},
        "/v1/vex/consensus/explain": {"get": v1("explainConsensus", "The record (each statement's observation text joined under statements[].observation) and its decision trace.",
            [artifact(True), vuln(True)], {"200": ok(ref("Explained"))})},
        "/v1/vex/consensus/history": {"get": v1("consensusHistory",
            "Every stored version of a pair, oldest first; with as_of, the version current then.",
            [artifact(True), vuln(True), qp("as_of", "RFC 3339 time (compared with the time a version was written).",
                                            {"type": "string", "format": "date-time"})],
            {"200": ok({"oneOf": [ref("RecordPage"), ref("ConsensusRecord")]})})},
        "/v1/vex/consensus/stream": {"get": v1("streamConsensus",
            "Server-Sent Events of every consensus change of the tenant (whichever instance made it), from the store's "
            "history. Each event: `id` = its position in the tenant's stream (1, 2, 3, ...), `event: consensus`, `data` = "
            "the record with `seq` and `changed_at_ms`. Comment lines (`: heartbeat`) keep an idle stream open. "
            "`Last-Event-ID` resumes with exactly the changes after that id; without it the stream starts with the "
            "changes committed after the request. A stream ends after `api.stream_max_age_secs` (reconnect with "
            "`Last-Event-ID`); a client that stops reading is dropped after `api.stream_stall_secs`.",
            [artifact(False), qp("package", "Package identifier (every artifact of the package)."),
             qp("last_event_id", "Same as the Last-Event-ID header (for clients that cannot set headers).",
                {"type": "string", "pattern": "^[0-9]{1,19}$"}),
             {"name": "Last-Event-ID", "in": "header", "required": False,
              "description": "The id of the last event received: the stream resumes after it.",
              "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"}}],
            {"200": {"description": "An event stream (ends after api.stream_max_age_secs).",
                     "content": {"text/event-stream": {"schema": {"type": "string"}}}},
             "429": err("The tenant (api.max_streams_per_tenant) or the token (api.max_streams_per_token) holds its "
                        "most change streams; see Retry-After.")})},
        "/v1/vex/conflicts": {"get": v1("listConflicts", "Open conflicts of the tenant.",
            [qp("reason", "Conflict reason; any other value is 400.",
               {"type": "string", "enum": ["status_disagreement", "scope_mismatch", "missing_provenance"]}),
             artifact(False), qp("package", "Package identifier.")] + PAGE, {"200": ok(ref("ConflictPage"))})},
        "/v1/vex/export": {"post": v1("runExport", "Run an export job for the caller's tenant.", [],
            {"200": ok(ref("ExportJob")), "413": err("Body too large."),
             "422": err("Nothing to export: no record matches and the format cannot be empty (OpenVEX; job in `job`)."),
             "500": err("The export job failed (job in `job`)."),
             "429": err("The tenant ran api.export_jobs_per_minute export jobs this minute; see Retry-After.")},
            scope="vex:export",
            body={"required": True, "content": {"application/json": {"schema": ref("ExportBody")}}})},
        "/v1/vex/exports": {"get": v1("listExports", "The tenant's export jobs, newest first.",
            [qp("page_size", "Most jobs returned (1..=1000).", {"type": "integer", "minimum": 1, "maximum": 1000})],
            {"200": ok({"type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": ref("ExportJob")}}})},
            scope="vex:export")},
        "/v1/vex/exports/{id}": {"get": v1("getExport", "Job state, manifest and files.",
            [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            {"200": ok(ref("ExportJob"))}, scope="vex:export")},
        "/v1/vex/exports/{id}/files/{name}": {"get": v1("downloadExportFile", "Download one file of the bundle.",
            [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
             {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            {"200": {"description": "The file.", "content": {"application/octet-stream": {"schema": {"type": "string"}},
                                                            "application/json": {"schema": {}},
                                                            "application/x-ndjson": {"schema": {"type": "string"}}}}},
            scope="vex:export")},
        "/v1/vex/trust/weights": {"get": v1("trustWeights",
            "Issuer tiers and effective weights, mode, knobs and policy version for the caller's tenant.", [],
            {"200": ok({"type": "object", "required": ["tenant", "mode", "policy_version", "knobs", "issuers"],
                        "properties": {"tenant": {"type": "string"}, "mode": {"type": "string"},
                                       "policy_version": {"type": "string"}, "knobs": {"type": "object"},
                                       "epoch": {"type": "integer", "minimum": 0,
                                                 "description": "The tenant's policy epoch (raised by every trust change; 0 = the configuration's)."},
                                       "tier_weights_ppm": {"type": "object"},
                                       "issuers": {"type": "array", "items": {"type": "object",
                                           "required": ["id", "tier", "weight_ppm", "tenant_override"],
                                           "properties": {"id": {"type": "string"}, "display_name": {"type": "string"},
                                                          "tier": {"type": "string"}, "weight_ppm": {"type": "integer"},
                                                          "tenant_override": {"type": "boolean"}}}}}})})},
        "/v1/vex/trust/issuers/{id}": {"put": v1("putTrustIssuer",
            "Change an issuer's tier and/or weight for the caller's tenant (replaces its override): persisted, "
            "audited (who, when, before, after), and every pair of the tenant recomputed before the answer.",
            [{"name": "id", "in": "path", "required": True, "description": "Issuer id, display name or alias (a name the directory does not know adds that issuer).",
              "schema": ISSUER_ID}],
            {"200": ok(ref("TrustChangeApplied")), **TRUST_ERRORS},
            scope="vex:admin",
            body={"required": True, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": False,
                "anyOf": ISSUER_NAMES,
                "properties": {"tier": TIER,
                               "weight": {"type": "number", "minimum": 0, "maximum": 1},
                               "reason": {"type": "string", "maxLength": 1024}},
                "example": {"tier": "known", "reason": "vetted"}}}}})},
        "/v1/vex/trust/policy": {"put": v1("putTrustPolicy",
            "Change the consensus mode and/or knobs for the caller's tenant (named knobs replace their values): "
            "persisted, audited, and every pair of the tenant recomputed before the answer.", [],
            {"200": ok(ref("TrustChangeApplied")), **TRUST_ERRORS},
            scope="vex:admin",
            body={"required": True, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": False,
                "anyOf": POLICY_NAMES,
                "properties": {"mode": MODE, "knobs": KNOBS, "reason": {"type": "string", "maxLength": 1024}},
                "example": {"knobs": {"conflict_threshold": 0.4}, "reason": "drill"}}}}})},
        "/v1/vex/feeds": {"get": v1("listFeeds",
            "The CSAF feeds configured for the caller's tenant (disabled ones too), each with its settings, its health "
            "on this instance, its last run, last success and last failure, watermark, documents tracked, failing and "
            "the next retry. /status lists only the feeds' names and health.", [],
            {"200": ok({"type": "object", "required": ["tenant", "items"],
                        "properties": {"tenant": {"type": "string"}, "items": {"type": "array", "items": ref("Feed")}}})},
            scope="vex:admin")},
        "/v1/vex/simulate": {"post": v1("simulate",
            "What-if: the pairs whose status or confidence an issuer or policy change would alter (nothing is applied).", [],
            {"200": ok({"type": "object", "required": ["tenant", "applied", "evaluated_pairs", "truncated", "changed"],
                        "properties": {"tenant": {"type": "string"}, "applied": {"const": False},
                                       "policy_version_before": {"type": "string"}, "policy_version_after": {"type": "string"},
                                       "evaluated_pairs": {"type": "integer"}, "truncated": {"type": "boolean"},
                                       "changed": {"type": "array", "items": {"type": "object"}}}}),
             "413": err("Body too large."),
             "429": err("The tenant ran api.simulations_per_minute simulations this minute; see Retry-After.")},
            scope="vex:admin",
            body={"required": True, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": False,
                # At least one of the two (minProperties, not an anyOf of requireds: schemathesis'
                # coverage phase crashes on anyOf nested in anyOf); an issuer change names a
                # tier or a weight besides its id.
                "minProperties": 1,
                "properties": {
                    "issuer": {"type": "object", "additionalProperties": False, "required": ["id"], "minProperties": 2,
                               "properties": {"id": ISSUER_ID, "tier": TIER,
                                              "weight": {"type": "number", "minimum": 0, "maximum": 1}}},
                    "policy": {"type": "object", "additionalProperties": False, "anyOf": POLICY_NAMES,
                               "properties": {"mode": MODE, "knobs": KNOBS}}},
                "example": {"issuer": {"id": "acme", "tier": "untrusted"}}}}}})},
    },
}
out = pathlib.Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
out.write_text(json.dumps(doc, indent=2) + "\n")
print(out)
