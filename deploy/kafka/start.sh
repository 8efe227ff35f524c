#!/bin/sh
# Starts the compose Kafka (KRaft, one node) with SASL/SCRAM and ACLs (docs/operations.md).
# Formats the volume on first start with the SCRAM users from .env, then runs the broker.
set -eu
: "${KAFKA_CLUSTER_ID:?}" "${KAFKA_ADMIN_PASSWORD:?}" "${KAFKA_WORKER_PASSWORD:?}"
: "${KAFKA_STOREFRONT_PASSWORD:?}" "${KAFKA_OPS_PASSWORD:?}"
CONFIG=/tmp/server.properties
cat > "$CONFIG" <<PROPERTIES
node.id=1
process.roles=broker,controller
controller.quorum.voters=1@127.0.0.1:9093
controller.listener.names=CONTROLLER
# CONTROLLER is this node talking to itself, on the loopback only. INTERNAL: the compose
# network (workers, the topics job). EXTERNAL: storefronts, published on 127.0.0.1 by default.
listeners=CONTROLLER://127.0.0.1:9093,INTERNAL://:9092,EXTERNAL://:9094
advertised.listeners=INTERNAL://kafka:9092,EXTERNAL://${KAFKA_EXTERNAL_HOST:-localhost}:9094
listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:SASL_PLAINTEXT,EXTERNAL:${KAFKA_EXTERNAL_PROTOCOL:-SASL_PLAINTEXT}
inter.broker.listener.name=INTERNAL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.internal.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${KAFKA_ADMIN_PASSWORD}";
listener.name.external.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
# admin: the ACL job and operators; ANONYMOUS: only the loopback controller listener
super.users=User:admin;User:ANONYMOUS
log.dirs=/var/lib/kafka/data
num.partitions=${ECRM_PARTITIONS:-4}
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
PROPERTIES
if [ "${KAFKA_EXTERNAL_PROTOCOL:-SASL_PLAINTEXT}" = SASL_SSL ]; then
  # TLS on EXTERNAL: a keystore mounted at /etc/kafka/tls, its password from .env
  : "${KAFKA_TLS_KEYSTORE_PASSWORD:?SASL_SSL needs KAFKA_TLS_KEYSTORE_PASSWORD}"
  cat >> "$CONFIG" <<PROPERTIES
listener.name.external.ssl.keystore.location=/etc/kafka/tls/kafka.keystore.p12
listener.name.external.ssl.keystore.type=PKCS12
listener.name.external.ssl.keystore.password=${KAFKA_TLS_KEYSTORE_PASSWORD}
PROPERTIES
fi
if [ ! -f /var/lib/kafka/data/meta.properties ]; then
  /opt/kafka/bin/kafka-storage.sh format --ignore-formatted -t "$KAFKA_CLUSTER_ID" -c "$CONFIG" \
    --add-scram "SCRAM-SHA-512=[name=admin,password=${KAFKA_ADMIN_PASSWORD}]" \
    --add-scram "SCRAM-SHA-512=[name=ecrm-worker,password=${KAFKA_WORKER_PASSWORD}]" \
    --add-scram "SCRAM-SHA-512=[name=storefront,password=${KAFKA_STOREFRONT_PASSWORD}]" \
    --add-scram "SCRAM-SHA-512=[name=ecrm-ops,password=${KAFKA_OPS_PASSWORD}]"
fi
exec /opt/kafka/bin/kafka-server-start.sh "$CONFIG"
