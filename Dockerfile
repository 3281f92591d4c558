# One image for every Python part of the stack: gateway, Celery worker, judge, rules and trainer.
# The command (compose `command:` / k8s `args:`) picks the part.
#
#   docker build -t rvpo-stack:cpu .                                   # CPU torch (services)
#   docker build -t rvpo-stack:gpu --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .   # trainer
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

# torch first, from the index given here: the CPU wheel for the services (a CUDA build is several GB and
# pointless there), a CUDA index for the trainer image.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY services ./services
COPY judge ./judge
COPY trainer ./trainer
COPY rvpo ./rvpo
RUN pip install .
COPY data ./data

RUN useradd --create-home --uid 10001 rvpo && mkdir -p /app/runs && chown rvpo /app/runs
USER 10001

EXPOSE 8000 8001 8002
# Inside a container the services must listen on every interface (they bind 127.0.0.1 by default).
CMD ["python", "-m", "uvicorn", "services.gateway.app:app", "--host", "0.0.0.0", "--port", "8000"]
