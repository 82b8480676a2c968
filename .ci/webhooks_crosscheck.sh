#!/usr/bin/env bash
# Cross-checks idem's webhook signatures against libraries nobody here wrote:
# the official Standard Webhooks library (PyPI `standardwebhooks`) and
# Stripe's (PyPI `stripe`, `Webhook.construct_event`). In both directions:
# signatures made by idem must verify with them, and payloads they sign must
# verify with idem; tampered payloads must fail on both sides.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${IDEM_WEBHOOK_VENV:-${TMPDIR:-/tmp}/idem-webhooks-venv}"
if [ ! -x "$venv/bin/python" ] && ! python3 -m venv "$venv"; then
  # Debian without python3-venv: install it, then retry once.
  if command -v apt-get >/dev/null; then
    apt-get install -y -qq python3-venv >/dev/null
  fi
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check "standardwebhooks>=1.0" "stripe>=7"
"$venv/bin/python" -c 'import standardwebhooks, stripe; print("standardwebhooks", getattr(standardwebhooks, "__version__", "?"), "| stripe", stripe.VERSION)'

cargo build --quiet -p idem --example webhook_sign
target_dir="${CARGO_TARGET_DIR:-target}"
export IDEM_WEBHOOK_SIGN="$target_dir/debug/examples/webhook_sign"

"$venv/bin/python" - <<'PY'
import base64, datetime, json, os, subprocess, sys, time

import standardwebhooks
import stripe

BIN = os.environ["IDEM_WEBHOOK_SIGN"]
failures = []

def idem(mode, cases):
    out = subprocess.run([BIN, mode], input=json.dumps({"cases": cases}), capture_output=True, text=True, check=True)
    return json.loads(out.stdout)

now = int(time.time())
std_secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
stripe_secret = "whsec_" + os.urandom(16).hex()
bodies = [
    '{"type":"invoice.paid","data":{"id":"in_1","amount":2599}}',
    '{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","object":"event","type":"payment_intent.succeeded","data":{"object":{"id":"pi_1","metadata":{"idem_key":"joes-bikes_transactions_1041_v1"}}}}',
    '{"unicode":"caf\u00e9 \u2603","nested":{"a":[1,2,3]}}',
]

# 1. idem signs, the libraries verify.
cases = []
for i, body in enumerate(bodies):
    cases.append({"scheme": "standard", "secret": std_secret, "id": f"msg_idem_{i}", "timestamp": now, "body": body})
    cases.append({"scheme": "stripe", "secret": stripe_secret, "id": "", "timestamp": now, "body": body})
signed = idem("sign", cases)["cases"]
wh = standardwebhooks.Webhook(std_secret)
checked = 0
for c in signed:
    if c["scheme"] == "standard":
        headers = {"webhook-id": c["id"], "webhook-timestamp": str(c["timestamp"]), "webhook-signature": c["signature"]}
        try:
            wh.verify(c["body"], headers)
            checked += 1
        except Exception as e:
            failures.append(f"standardwebhooks rejected idem's signature: {e}")
        try:
            wh.verify(c["body"] + " ", headers)
            failures.append("standardwebhooks accepted a tampered body signed by idem")
        except standardwebhooks.WebhookVerificationError:
            pass
    else:
        try:
            event = stripe.Webhook.construct_event(c["body"], c["signature"], stripe_secret)
            checked += 1
        except Exception as e:
            failures.append(f"stripe.Webhook.construct_event rejected idem's signature: {e}")
        try:
            stripe.Webhook.construct_event(c["body"].replace("1", "2"), c["signature"], stripe_secret)
            failures.append("stripe accepted a tampered body signed by idem")
        except stripe.SignatureVerificationError:
            pass
print(f"idem -> libraries: {checked}/{len(signed)} signatures verified")

# 2. The libraries sign, idem verifies (and refuses tampered copies).
cases, expected = [], []
for i, body in enumerate(bodies):
    msg_id = f"msg_lib_{i}"
    sig = wh.sign(msg_id, datetime.datetime.fromtimestamp(now, tz=datetime.timezone.utc), body)
    cases.append({"scheme": "standard", "secret": std_secret, "id": msg_id, "timestamp": now, "body": body, "signature": sig})
    expected.append(True)
    cases.append({"scheme": "standard", "secret": std_secret, "id": msg_id, "timestamp": now, "body": body + "x", "signature": sig})
    expected.append(False)
    header = stripe.WebhookSignature.generate_signature_header(body, stripe_secret, timestamp=now)
    cases.append({"scheme": "stripe", "secret": stripe_secret, "id": "", "timestamp": now, "body": body, "signature": header})
    expected.append(True)
    cases.append({"scheme": "stripe", "secret": stripe_secret + "x", "id": "", "timestamp": now, "body": body, "signature": header})
    expected.append(False)
got = idem("verify", cases)["results"]
for c, g, e in zip(cases, got, expected):
    if g != e:
        failures.append(f"idem {'accepted' if g else 'rejected'} a {c['scheme']} case it should have {'accepted' if e else 'rejected'}")
print(f"libraries -> idem: {sum(got)} accepted, {len(got) - sum(got)} refused, {sum(g == e for g, e in zip(got, expected))}/{len(got)} as expected")

if failures:
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)
print("webhook signatures cross-checked: OK")
PY
