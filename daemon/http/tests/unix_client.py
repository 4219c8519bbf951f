"""The `openai` client the bridge tests' scripts use: moed-http's unix socket, no retries."""

import httpx
import openai


def client(socket: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://localhost/v1",
        api_key="unused-on-the-unix-socket",
        http_client=httpx.Client(transport=httpx.HTTPTransport(uds=socket)),
        max_retries=0,
    )
