#!/usr/bin/env bash
# Gives a 2nd-gen function's Pub/Sub trigger subscription (created by Eventarc, with a
# generated name) a retry backoff and a dead-letter topic after ATTEMPTS delivery attempts
# (scripts/deploy.py passes buddy.config.MAX_DELIVERY_ATTEMPTS).
# Usage: scripts/set-dead-letter-policy.sh PROJECT REGION FUNCTION DEAD_TOPIC ATTEMPTS
set -euo pipefail
project=$1 region=$2 function=$3 dead_topic=$4 attempts=$5
trigger=$(gcloud functions describe "$function" --gen2 --project="$project" --region="$region" \
  --format='value(eventTrigger.trigger)')
subscription=$(gcloud eventarc triggers describe "${trigger##*/}" --project="$project" \
  --location="$region" --format='value(transport.pubsub.subscription)')
gcloud pubsub subscriptions update "$subscription" --project="$project" \
  --dead-letter-topic="$dead_topic" --max-delivery-attempts="$attempts" \
  --min-retry-delay=1s --max-retry-delay=60s
# Pub/Sub's own agent must be able to move messages to the dead-letter topic.
number=$(gcloud projects describe "$project" --format='value(projectNumber)')
agent="serviceAccount:service-${number}@gcp-sa-pubsub.iam.gserviceaccount.com"
gcloud pubsub topics add-iam-policy-binding "$dead_topic" --project="$project" \
  --member="$agent" --role=roles/pubsub.publisher
gcloud pubsub subscriptions add-iam-policy-binding "$subscription" --project="$project" \
  --member="$agent" --role=roles/pubsub.subscriber
