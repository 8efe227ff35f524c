#!/bin/sh
# One-shot (compose service `acls`): the contract topics and who may do what on them.
#   storefront  writes the storefront input topics, nothing else
#   ecrm-worker reads the input topics, writes the output topics, its consumer group and
#               Faust's own topics (prefix ECRM_APP_ID-)
#   ecrm-ops    writes what `ecrm` commands produce: campaigns, customers (consent), points
#               and tags (membership)
#               and, for `ecrm deliver`, reads ecrm.actions in group ECRM_APP_ID-deliver and
#               writes ecrm.deliveries and ecrm.delivery-failures
# Nobody else writes ecrm.actions: only the worker, whose user only ecrm's workers know.
set -eu
: "${KAFKA_ADMIN_PASSWORD:?}"
P="${ECRM_TOPIC_PREFIX:-ecrm.}"
APP="${ECRM_APP_ID:-ecrm}"
ADMIN=/tmp/admin.properties
cat > "$ADMIN" <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${KAFKA_ADMIN_PASSWORD}";
PROPERTIES
K="--bootstrap-server kafka:9092 --command-config $ADMIN"
for kind in orders cart favorites browse customers campaigns identities points tags actions segment-changes member-changes dead-letter deliveries delivery-failures; do
  /opt/kafka/bin/kafka-topics.sh $K --create --if-not-exists --topic "${P}${kind}" \
    --partitions "${ECRM_PARTITIONS:-4}" --replication-factor 1 \
    --config retention.ms=604800000 --config cleanup.policy=delete  # streams/topics.py TOPIC_CONFIG
done
acl() { /opt/kafka/bin/kafka-acls.sh $K --add --force "$@"; }
for kind in orders cart favorites browse customers identities; do
  acl --allow-principal User:storefront --operation Write --operation Describe --topic "${P}${kind}"
done
for kind in orders cart favorites browse customers campaigns identities points tags; do
  acl --allow-principal User:ecrm-worker --operation Read --operation Describe --topic "${P}${kind}"
done
for kind in actions segment-changes member-changes dead-letter; do
  acl --allow-principal User:ecrm-worker --operation Write --operation Read --operation Describe --topic "${P}${kind}"
done
# On a Redis Cluster (ECRM_REDIS_CLUSTER) the worker forwards an event to its customer's
# partition on the topic it came on (docs/operations.md, "Redis Cluster"): it writes the inputs.
if [ "${ECRM_REDIS_CLUSTER:-false}" = "true" ]; then
  for kind in orders cart favorites browse customers campaigns identities points tags; do
    acl --allow-principal User:ecrm-worker --operation Write --topic "${P}${kind}"
  done
fi
acl --allow-principal User:ecrm-worker --operation All --resource-pattern-type prefixed --topic "${APP}-"
acl --allow-principal User:ecrm-worker --operation Read --operation Describe --group "${APP}"
# `ecrm deliver` (docs/delivery.md) runs as ecrm-worker: it reads ecrm.actions in its own group
# and writes the receipts
acl --allow-principal User:ecrm-worker --operation Read --operation Describe --group "${APP}-deliver"
for kind in deliveries delivery-failures; do
  acl --allow-principal User:ecrm-worker --operation Write --operation Read --operation Describe --topic "${P}${kind}"
done
acl --allow-principal User:ecrm-worker --operation Describe --cluster
for kind in campaigns customers points tags; do
  acl --allow-principal User:ecrm-ops --operation Write --operation Describe --topic "${P}${kind}"
done
acl --allow-principal User:ecrm-ops --operation Describe --cluster
/opt/kafka/bin/kafka-acls.sh $K --list
