"""The tracking web server as the running service starts it from [tracking] listen."""
from __future__ import annotations

import http.client

from .server import ServerTestCase


class TrackingServerTests(ServerTestCase):
    async def test_unsubscribe_through_the_service(self) -> None:
        """POST to a recipient's /u.z link puts the address on the account's Unsubscribe list."""
        listen = "tcp:0:interface=127.0.0.1"
        await self.start(self.config(tracking={"listen": [listen], "base_url": "http://127.0.0.1"}))
        await self.ip_account("shop")
        await self.service.store.record_send("18ABC0F3E2D41ZX7Q9", "shop", ["you@remote.test"], 0.0)
        port = self.service.listening(f"tracking:{listen}").getHost().port
        unsubscribe_id = self.service.tracking_signer.unsubscribe_id("18ABC0F3E2D41ZX7Q9", 0)

        def post(path: str) -> int:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("POST", path, body=b"List-Unsubscribe=One-Click",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
            status = connection.getresponse().status
            connection.close()
            return status

        self.assertEqual(await self.in_thread(post, f"/u.z?{unsubscribe_id}"), 200)
        self.assertEqual(await self.service.store.suppressed("shop", "unsubscribe", ["you@remote.test"]),
                         {"you@remote.test"})
        self.assertEqual(await self.in_thread(post, f"/u.z?{unsubscribe_id[:-1]}x"), 404)
