"""A Synapse homeserver on loopback, as a real federation peer for kith's tests.

Run with the Synapse venv's python (.ci/synapse-venv, $KITH_SYNAPSE_PYTHON):

    synapse_peer.py --dir DIR --port PORT [--kith-name NAME ...] [--config-only]

Writes into DIR (created if missing):
    tls.crt, tls.key      self-signed, for 127.0.0.1, ::1 and localhost (kept across runs)
    signing.key           the server's ed25519 signing key (kept across runs)
    homeserver.yaml       rewritten each run; log.config likewise
    homeserver.db         sqlite, media/ and synapse.log: made by Synapse
then replaces itself (os.execv, same PID) with Synapse in the foreground, so the caller
stops it by killing that PID.

Synapse's server name is `127.0.0.1:PORT`, and its one listener, on 127.0.0.1:PORT, speaks
HTTPS only and serves both the client and the federation APIs: clients and federating
servers alike use https://127.0.0.1:PORT (with certificate checks off, or trusting
DIR/tls.crt). Ready once GET /_matrix/client/versions answers 200.

--http serves plain HTTP instead (for `kith-bench --compare-synapse`, which talks to both
servers' client APIs the same way).

--kith-name NAME (repeatable) restricts Synapse's federation to those servers (and itself)
through `federation_domain_whitelist`; without it, Synapse federates with any server name
that resolves to loopback. Outbound, Synapse trusts any certificate, so kith can serve a
self-signed one.
"""

import argparse
import datetime
import ipaddress
import os
import secrets
import string
import sys

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from signedjson.key import generate_signing_key, write_signing_keys

# Synapse's default `ip_range_blacklist` (synapse/config/server.py) less loopback:
# 127.0.0.0/8 and ::1. Synapse checks an IP-literal destination (`127.0.0.1:PORT`) against
# this blocklist alone, ignoring `ip_range_whitelist`, so loopback has to be left out here;
# an allowlist does not help.
IP_RANGE_BLOCKLIST = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "fe80::/10",
    "fc00::/7",
    "2001:db8::/32",
    "ff00::/8",
    "fec0::/10",
]

# Rate limits high enough never to matter in a test.
UNLIMITED = {"per_second": 10000, "burst_count": 100000}


def write_tls(directory: str) -> tuple[str, str]:
    cert_path = os.path.join(directory, "tls.crt")
    key_path = os.path.join(directory, "tls.key")
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                    x509.DNSName("localhost"),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def write_signing_key(directory: str) -> str:
    path = os.path.join(directory, "signing.key")
    if not os.path.exists(path):
        alphabet = string.ascii_letters + string.digits
        version = "a_" + "".join(secrets.choice(alphabet) for _ in range(4))
        with open(path, "w") as f:
            write_signing_keys(f, [generate_signing_key(version)])
    return path


def write_log_config(directory: str) -> str:
    path = os.path.join(directory, "log.config")
    config = {
        "version": 1,
        "formatters": {
            "precise": {
                "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s"
                " - %(request)s - %(message)s"
            }
        },
        "handlers": {
            # Unbuffered, so a test that fails can read the log right away.
            "file": {
                "class": "logging.FileHandler",
                "formatter": "precise",
                "filename": os.path.join(directory, "synapse.log"),
                "encoding": "utf8",
            }
        },
        "loggers": {"synapse.storage.SQL": {"level": "WARNING"}},
        "root": {"level": "INFO", "handlers": ["file"]},
        "disable_existing_loggers": False,
    }
    with open(path, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    return path


def write_config(args: argparse.Namespace) -> str:
    directory = args.dir
    os.makedirs(directory, exist_ok=True)
    server_name = f"127.0.0.1:{args.port}"
    cert_path, key_path = write_tls(directory)
    config = {
        "server_name": server_name,
        "public_baseurl": f"https://{server_name}/",
        "pid_file": os.path.join(directory, "homeserver.pid"),
        "listeners": [
            {
                "port": args.port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": not args.http,
                "x_forwarded": False,
                "resources": [
                    {"names": ["client", "federation"], "compress": False}
                ],
            }
        ],
        "tls_certificate_path": cert_path,
        "tls_private_key_path": key_path,
        "database": {
            "name": "sqlite3",
            "args": {"database": os.path.join(directory, "homeserver.db")},
        },
        "log_config": write_log_config(directory),
        "media_store_path": os.path.join(directory, "media"),
        "signing_key_path": write_signing_key(directory),
        "report_stats": False,
        "enable_metrics": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        # Federation on loopback, to self-signed peers.
        "federation_verify_certificates": False,
        "ip_range_blacklist": IP_RANGE_BLOCKLIST,
        "federation_ip_range_blacklist": IP_RANGE_BLOCKLIST,
        "ip_range_whitelist": ["127.0.0.0/8", "::1/128"],
        "allow_public_rooms_over_federation": True,
        # Since 1.x Synapse publishes no room to its directory unless a rule allows it.
        "room_list_publication_rules": [{"action": "allow"}],
        "allow_profile_lookup_over_federation": True,
        # Retry a failing peer after a second, not after ten minutes.
        "federation": {
            "destination_min_retry_interval": "1s",
            "destination_retry_multiplier": 1,
            "destination_max_retry_interval": "2s",
        },
        # Accounts: open registration, and the shared secret for /_synapse/admin/v1/register.
        "enable_registration": True,
        "enable_registration_without_verification": True,
        "registration_shared_secret": args.shared_secret,
        "macaroon_secret_key": args.shared_secret + "-macaroon",
        "form_secret": args.shared_secret + "-form",
        "user_directory": {"enabled": True, "search_all_users": True},
        # Rate limits out of the way.
        "rc_message": UNLIMITED,
        "rc_registration": UNLIMITED,
        "rc_registration_token_validity": UNLIMITED,
        "rc_login": {
            "address": UNLIMITED,
            "account": UNLIMITED,
            "failed_attempts": UNLIMITED,
        },
        "rc_admin_redaction": UNLIMITED,
        "rc_joins": {"local": UNLIMITED, "remote": UNLIMITED},
        "rc_joins_per_room": UNLIMITED,
        "rc_key_requests": UNLIMITED,
        "rc_3pid_validation": UNLIMITED,
        "rc_invites": {
            "per_room": UNLIMITED,
            "per_user": UNLIMITED,
            "per_issuer": UNLIMITED,
        },
        "rc_third_party_invite": UNLIMITED,
        "rc_media_create": UNLIMITED,
        "rc_presence": {"per_user": UNLIMITED},
        "rc_delayed_event_mgmt": UNLIMITED,
        "rc_room_creation": UNLIMITED,
        "rc_reports": UNLIMITED,
        "rc_user_directory": UNLIMITED,
        "rc_profile": UNLIMITED,
        "rc_federation": {
            "window_size": 1000,
            "sleep_limit": 10000,
            "sleep_delay": 1,
            "reject_limit": 100000,
            "concurrent": 1000,
        },
        "federation_rr_transactions_per_room_per_second": 10000,
    }
    if args.kith_name:
        config["federation_domain_whitelist"] = [server_name, *args.kith_name]
    path = os.path.join(directory, "homeserver.yaml")
    with open(path, "w") as f:
        f.write("# Written by tests/peers/synapse_peer.py; rewritten on every start.\n")
        yaml.safe_dump(config, f, sort_keys=False)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True, help="state and config directory")
    parser.add_argument("--port", required=True, type=int, help="HTTPS port on 127.0.0.1")
    parser.add_argument(
        "--kith-name",
        action="append",
        default=[],
        help="a server name (host:port) Synapse may federate with; repeatable",
    )
    parser.add_argument(
        "--shared-secret",
        default="kith-test-registration-secret",
        help="registration_shared_secret (for /_synapse/admin/v1/register)",
    )
    parser.add_argument(
        "--config-only", action="store_true", help="write the files, don't start Synapse"
    )
    parser.add_argument(
        "--http",
        action="store_true",
        help="plain HTTP on the listener (the benchmark: clients only, like kith's client port)",
    )
    args = parser.parse_args()
    args.dir = os.path.abspath(args.dir)

    config_path = write_config(args)
    if args.config_only:
        print(config_path)
        return
    os.chdir(args.dir)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(
        sys.executable,
        [sys.executable, "-m", "synapse.app.homeserver", "-c", config_path],
    )


if __name__ == "__main__":
    main()
