"""The HTTP ingress: OpenAI's `POST /v1/audio/transcriptions` in front of the model replicas.

A light deployment (no model, no CPU reserved) that checks the token and the form, reads
the upload under MAX_FILE_MB, and passes the bytes to a model replica through Serve's
handle, so Serve's router does the queueing and the backpressure (`max_queued_requests`
full -> 503). `/healthz` never waits for a model. Which models detect languages is asked of
the replicas once, from start-up on, so `/v1/models` can answer it while they are all busy.
Every refused request is answered with an OpenAI-style JSON error and logged in one line;
nothing a client sends can take it down.
"""

import asyncio

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator
from starlette.datastructures import UploadFile

from bot.execution.ray import openai_api, relay
from bot.execution.ray.config import ServeConfig
from bot.execution.ray.openai_api import ApiError, TranscriptionForm

#: Multipart framing around the file: what a request may carry beyond MAX_FILE_MB.
FORM_OVERHEAD = 64 * 1024
#: How long `/v1/models` waits for the replicas' first answer (a replica still loading) before it
#: answers busy.
MODELS_WAIT_SECONDS = 3.0

api = FastAPI(title="voicebot transcription", docs_url=None, redoc_url=None, openapi_url=None)


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
@serve.ingress(api)
class Gateway:
    def __init__(self, transcriber: DeploymentHandle, config: ServeConfig) -> None:
        self._transcriber = transcriber
        self._config = config
        #: What requests may name, the `*` model (the default) first.
        self._models = config.engine.models or (config.engine.model,)
        #: Which of them detect languages, as the first replica to answer said (every replica runs the
        #: same). Serve runs this constructor on the deployment's event loop.
        self._detectors = asyncio.get_running_loop().create_task(self._learn_detectors())

    @api.get("/healthz")
    async def healthz(self) -> PlainTextResponse:
        return PlainTextResponse("ok")

    @api.get("/v1/models")
    async def models(self, request: Request) -> Response:
        """The models a request's `model` may name (OpenAI's list), each saying whether it detects languages."""
        try:
            self._check_token(request)
            detectors = await asyncio.wait_for(asyncio.shield(self._detectors), MODELS_WAIT_SECONDS)
        except TimeoutError:  # no replica has answered yet
            return relay.refuse(request, openai_api.busy(relay.BUSY_RETRY_AFTER))
        except ApiError as error:
            return relay.refuse(request, error)
        return JSONResponse(openai_api.model_list(self._models, detectors))

    @api.get("/v1/voicebot/stats")
    async def stats(self, request: Request) -> Response:
        """One replica's counters (after the job it is running, if any)."""
        try:
            self._check_token(request)
            return JSONResponse(await relay.answer(self._transcriber.stats.remote()))
        except ApiError as error:
            return relay.refuse(request, error)

    @api.post("/v1/audio/transcriptions")
    async def transcriptions(self, request: Request) -> Response:
        try:
            self._check_token(request)
            form, audio = await self._read(request)
            replica = self._transcriber.options(stream=True).transcribe.remote(audio, form.options, form.stream)
            assert isinstance(replica, DeploymentResponseGenerator)
            response: Response | None = None
            try:
                response = await self._answer(request, form, replica)
                return response
            finally:
                if not isinstance(response, StreamingResponse):  # done, failed, or the client left before the
                    replica.cancel()  # answer: a replica still running stops between chunks; a stream does it itself
        except BackPressureError:  # Serve's queue for the replicas is full
            return relay.refuse(request, openai_api.busy(relay.BUSY_RETRY_AFTER))
        except relay.ReplicaLost:
            return relay.refuse(request, relay.lost())
        except ApiError as error:
            return relay.refuse(request, error)

    async def _learn_detectors(self) -> frozenset[str]:
        """The replicas' language detectors, asked again after a pause while every replica is busy or lost."""
        while True:
            try:
                detectors: frozenset[str] = await relay.answer(self._transcriber.language_detectors.remote())
                return detectors
            except ApiError as error:  # busy or lost: the next replica free may answer
                relay.log.info("language detectors not known yet (%s); asking again", error.message)
            except Exception:  # noqa: BLE001 - a failed replica must not leave /v1/models without an answer
                relay.log.exception("a replica failed to name its language detectors; asking again")
            await asyncio.sleep(relay.BUSY_RETRY_AFTER)

    def _check_token(self, request: Request) -> None:
        """An `ApiError` (401) unless the request carries ASR_API_KEY as its bearer token, when one is set."""
        openai_api.check_token(request.headers.get("authorization"), self._config.api_key)

    async def _read(self, request: Request) -> tuple[TranscriptionForm, bytes]:
        limit = self._config.max_file_mb
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit * 2**20 + FORM_OVERHEAD:
            openai_api.check_upload(int(declared) - FORM_OVERHEAD, max_file_mb=limit)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError(400, "Send the request as multipart/form-data with the audio in the field `file`.",
                           "invalid_request")
        try:
            parsed = await request.form(max_files=1, max_fields=50, max_part_size=64 * 1024)
        except Exception as exc:  # any malformed body is the client's
            raise ApiError(400, f"The multipart body could not be read ({exc}).", "invalid_request") from exc
        try:
            upload = parsed.get("file")
            if upload is not None and not isinstance(upload, UploadFile):
                raise ApiError(400, "The field `file` must be a file upload.", "invalid_request", param="file")
            fields = {key: [value for value in parsed.getlist(key) if isinstance(value, str)]
                      for key in parsed.keys() if key != "file"}
            form = openai_api.parse_form(fields, models=self._models)
            openai_api.check_upload(None if upload is None else upload.size, max_file_mb=limit)
            assert upload is not None
            return form, await upload.read()
        finally:
            await parsed.close()

    async def _answer(self, request: Request, form: TranscriptionForm,
                      replica: DeploymentResponseGenerator) -> Response:
        first = await relay.next_event(replica)
        if first is None:  # lost before its first event: nothing was sent yet
            if form.stream:
                return StreamingResponse(relay.broken(), media_type="text/event-stream")
            raise relay.ReplicaLost
        headers = {relay.PID_HEADER: str(first.pid)}
        if first.kind in ("error", "invalid"):
            raise relay.event_error(first)
        if not form.stream:
            event = first
            while event.kind == "progress":  # progress is only asked for when streaming
                event = await relay.next_or_raise(replica)
            if event.kind != "result" or event.result is None:
                raise relay.event_error(event)
            body, media_type = openai_api.render(event.result, form)
            return Response(body, media_type=media_type, headers=headers)
        return StreamingResponse(relay.events(request, first, replica), media_type="text/event-stream",
                                 headers={**headers, "Cache-Control": "no-store"})

