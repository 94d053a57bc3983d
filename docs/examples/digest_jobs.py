"""The job definitions that the web process and the worker share: no engine, no deps."""

from deps import send_digest
from getting_started import Digest, Signup, collect

from durable_jobs import Debounce


digests = Debounce(  # Debounce[Signup, Digest, MailError, HasMailer]: it needs a mailer
    name="digests",
    event=Signup,
    state=Digest,
    flush_after="100 ms",  # short, so that the example ends quickly
    on_event=collect,
    execute=send_digest,
)
