"""The MQTT driver: topics and payloads of interfaces.md section 2 (codec), `MqttPump`, and
`MqttBus`, one broker connection shared by many pumps."""

from drivers.mqtt.bus import MqttBus
from drivers.mqtt.codec import (
    DEFAULT_PREFIX,
    MQTT_CONTRACT,
    OFFLINE_PAYLOAD,
    AckPayload,
    CommandPayload,
    OfflinePayload,
    Op,
    PayloadError,
    StatusPayload,
    Topics,
    command_id_of,
    decode_ack,
    decode_command,
    decode_status,
)
from drivers.mqtt.pump import (
    COMMAND_TIMEOUT_S,
    CONTRACT_1_HEARTBEAT_S,
    LINK_TIMEOUT_S,
    OVERDUE_FACTOR,
    TCP_NODELAY_OPTION,
    MqttPump,
    backoff_delay,
    parse_broker,
)

__all__ = [
    "COMMAND_TIMEOUT_S",
    "CONTRACT_1_HEARTBEAT_S",
    "DEFAULT_PREFIX",
    "LINK_TIMEOUT_S",
    "MQTT_CONTRACT",
    "OFFLINE_PAYLOAD",
    "OVERDUE_FACTOR",
    "TCP_NODELAY_OPTION",
    "AckPayload",
    "CommandPayload",
    "MqttBus",
    "MqttPump",
    "OfflinePayload",
    "Op",
    "PayloadError",
    "StatusPayload",
    "Topics",
    "backoff_delay",
    "command_id_of",
    "decode_ack",
    "decode_command",
    "decode_status",
    "parse_broker",
]
