"""``python -m services.gateway``: serve the gateway on ``RVPO_GATEWAY_HOST:RVPO_GATEWAY_PORT``."""

import uvicorn

from services.gateway.settings import GatewaySettings

if __name__ == "__main__":
    s = GatewaySettings()
    uvicorn.run("services.gateway.app:app", host=s.gateway_host, port=s.gateway_port)
