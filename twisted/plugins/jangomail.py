"""twistd plugin: C{twistd jangomail --config FILE}."""
from twisted.application.service import ServiceMaker

jangomail = ServiceMaker(
    "jangotw mail relay",
    "jangotw.tap",
    "ESMTP relay with durable spool, cred portal and sending policy",
    "jangomail",
)
