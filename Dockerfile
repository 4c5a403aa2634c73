# The coalition hub image. Build: `docker build -t coalition .`; run: `docker compose up`.
#
# Two stages: the first generates the protobuf code (ignored by git, so never in the build
# context) and builds a wheel; the second installs only that wheel and the partner manifests,
# so neither the sources, .git nor a developer's .venv end up in the image.

FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
# Before the sources are copied, so this layer is reused until the base image changes.
RUN pip install "grpcio-tools>=1.60"

COPY . .
# The same steps as `make proto`, then the wheel (which carries the demo's manifests and
# programme as package data; `partners/` in the checkout is a link to them).
RUN rm -rf src/coalition/v1 \
    && mkdir -p src/coalition/v1 \
    && python -m grpc_tools.protoc -Iprotos --python_out=src --grpc_python_out=src \
        --pyi_out=src protos/coalition/v1/*.proto \
    && touch src/coalition/v1/__init__.py \
    && pip wheel --no-deps --wheel-dir /wheels .


FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN groupadd --system --gid 10001 coalition \
    && useradd --system --uid 10001 --gid coalition --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin coalition

# `pip install .` of the tree prepared above, in the form of the wheel built from it.
COPY --from=build /wheels /tmp/wheels
RUN pip install /tmp/wheels/*.whl && rm -rf /tmp/wheels

WORKDIR /app
COPY --from=build /src/src/coalition/demo/partners /app/partners

# The coalition user created above, by number so that runtimes can tell it is not root.
USER 10001:10001
EXPOSE 50051
ENTRYPOINT ["coalition"]
CMD ["serve", "--listen", "0.0.0.0:50051", "--partners", "/app/partners"]
