#!/usr/bin/env bash
# Same setup as docker-compose.yml for a MinIO you already run, with a local `mc` client:
# the webhook target "signalcraft", the two buckets, and the .wav upload notification.
#
#   infra/minio/setup.sh                                  # defaults below
#   MINIO_URL=http://127.0.0.1:9000 WEBHOOK_ENDPOINT=http://127.0.0.1:8765/ infra/minio/setup.sh
set -euo pipefail

MC="${MC:-mc}"                                    # some distributions call it mcli
ALIAS="${MINIO_ALIAS:-local}"
MINIO_URL="${MINIO_URL:-http://127.0.0.1:9000}"
MINIO_ROOT_USER="${MINIO_ROOT_USER:-minioadmin}"
MINIO_ROOT_PASSWORD="${MINIO_ROOT_PASSWORD:-minioadmin}"
WEBHOOK_ENDPOINT="${WEBHOOK_ENDPOINT:-http://127.0.0.1:8765/}"
RECORDINGS_BUCKET="${RECORDINGS_BUCKET:-signalcraft-recordings}"
GRADES_BUCKET="${GRADES_BUCKET:-signalcraft-grades}"
ARN="arn:minio:sqs::signalcraft:webhook"

command -v "$MC" >/dev/null || { echo "setup.sh: '$MC' not found (install the MinIO client or set MC=...)" >&2; exit 1; }

"$MC" alias set "$ALIAS" "$MINIO_URL" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"

# Webhook target: a server-side setting, it takes effect after a restart.
if ! "$MC" admin config get "$ALIAS" notify_webhook:signalcraft 2>/dev/null | grep -q "endpoint=$WEBHOOK_ENDPOINT"; then
  "$MC" admin config set "$ALIAS" notify_webhook:signalcraft \
    enable=on endpoint="$WEBHOOK_ENDPOINT" queue_dir="${WEBHOOK_QUEUE_DIR:-/tmp/signalcraft-events}"
  "$MC" admin service restart "$ALIAS"
  for _ in $(seq 1 30); do "$MC" ready "$ALIAS" >/dev/null 2>&1 && break; sleep 1; done
fi

"$MC" mb --ignore-existing "$ALIAS/$RECORDINGS_BUCKET" "$ALIAS/$GRADES_BUCKET"

if ! "$MC" event list "$ALIAS/$RECORDINGS_BUCKET" "$ARN" | grep -q webhook; then
  "$MC" event add "$ALIAS/$RECORDINGS_BUCKET" "$ARN" --event put --suffix .wav
fi
"$MC" event list "$ALIAS/$RECORDINGS_BUCKET"

echo "MinIO ready: uploads of *.wav to $RECORDINGS_BUCKET are posted to $WEBHOOK_ENDPOINT"
echo "  export AWS_ENDPOINT_URL=$MINIO_URL AWS_ACCESS_KEY_ID=$MINIO_ROOT_USER AWS_SECRET_ACCESS_KEY=$MINIO_ROOT_PASSWORD"
