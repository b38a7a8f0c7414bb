#!/usr/bin/env bash
# Same setup as docker-compose.yml for a MinIO you already run, with a local `mc` client:
# the webhook target "signalcraft" (with the listener's token), the two buckets, and the .wav
# upload notification.
#
#   export SIGNALCRAFT_WEBHOOK_TOKEN=$(openssl rand -hex 32)   # the listener reads the same variable
#   # or, after one start of the listener without a token (it makes one in a 0600 file):
#   export SIGNALCRAFT_WEBHOOK_TOKEN="$(cat ~/.signalcraft/webhook-token)"
#   infra/minio/setup.sh                                       # defaults below
#   MINIO_URL=http://127.0.0.1:9000 WEBHOOK_ENDPOINT=http://127.0.0.1:8765/ infra/minio/setup.sh
set -euo pipefail

MC="${MC:-mc}"                                    # some distributions call it mcli
ALIAS="${MINIO_ALIAS:-local}"
MINIO_URL="${MINIO_URL:-http://127.0.0.1:9000}"
MINIO_ROOT_USER="${MINIO_ROOT_USER:-minioadmin}"
MINIO_ROOT_PASSWORD="${MINIO_ROOT_PASSWORD:-minioadmin}"
WEBHOOK_ENDPOINT="${WEBHOOK_ENDPOINT:-http://127.0.0.1:8765/}"
WEBHOOK_TOKEN="${SIGNALCRAFT_WEBHOOK_TOKEN:?setup.sh: export SIGNALCRAFT_WEBHOOK_TOKEN (MinIO sends it as a bearer token; the listener checks it)}"
RECORDINGS_BUCKET="${RECORDINGS_BUCKET:-signalcraft-recordings}"
GRADES_BUCKET="${GRADES_BUCKET:-signalcraft-grades}"
ARN="arn:minio:sqs::signalcraft:webhook"

command -v "$MC" >/dev/null || { echo "setup.sh: '$MC' not found (install the MinIO client or set MC=...)" >&2; exit 1; }

"$MC" alias set "$ALIAS" "$MINIO_URL" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"

# Webhook target: a server-side setting, it takes effect after a restart. Set on every run: the
# token cannot be read back to compare (MinIO redacts it), and a changed token must reach MinIO.
"$MC" admin config set "$ALIAS" notify_webhook:signalcraft \
  enable=on endpoint="$WEBHOOK_ENDPOINT" auth_token="$WEBHOOK_TOKEN" \
  queue_dir="${WEBHOOK_QUEUE_DIR:-/tmp/signalcraft-events}"
"$MC" admin service restart "$ALIAS"
for _ in $(seq 1 30); do "$MC" ready "$ALIAS" >/dev/null 2>&1 && break; sleep 1; done

"$MC" mb --ignore-existing "$ALIAS/$RECORDINGS_BUCKET" "$ALIAS/$GRADES_BUCKET"

if ! "$MC" event list "$ALIAS/$RECORDINGS_BUCKET" "$ARN" | grep -q webhook; then
  "$MC" event add "$ALIAS/$RECORDINGS_BUCKET" "$ARN" --event put --suffix .wav
fi
"$MC" event list "$ALIAS/$RECORDINGS_BUCKET"

echo "MinIO ready: uploads of *.wav to $RECORDINGS_BUCKET are posted to $WEBHOOK_ENDPOINT (with the bearer token)"
echo "  signalcraft local minio-listener --port 8765 --bucket $RECORDINGS_BUCKET   # reads SIGNALCRAFT_WEBHOOK_TOKEN"
echo "  export AWS_ENDPOINT_URL=$MINIO_URL AWS_ACCESS_KEY_ID=$MINIO_ROOT_USER AWS_SECRET_ACCESS_KEY=$MINIO_ROOT_PASSWORD"
