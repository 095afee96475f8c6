"""The official, unmodified OpenAI Python SDK (PyPI `openai`, pinned in
scripts/install-deps.sh) against prepis's /v1 API. tests/api/openai.rs starts the handler
behind the test front door and runs this with:

  PREPIS_OPENAI_BASE_URL   http://127.0.0.1:PORT/v1 (through the front door)
  PREPIS_OPENAI_BUSY_URL   the same for an instance with one worker and no queue
  PREPIS_OPENAI_KEY        the service's API key
  PREPIS_OPENAI_CASES      a JSON file: {"short": {"file", "text"}, "long": {...}, "french": {"file"}}
"""

import concurrent.futures
import json
import os
import re
import unittest

import openai
from openai import OpenAI

BASE_URL = os.environ["PREPIS_OPENAI_BASE_URL"]
BUSY_URL = os.environ["PREPIS_OPENAI_BUSY_URL"]
KEY = os.environ["PREPIS_OPENAI_KEY"]
with open(os.environ["PREPIS_OPENAI_CASES"], encoding="utf-8") as f:
    CASES = json.load(f)

SPELLED = {"mr": "mister", "mrs": "missus"}


def words(text):
    text = text.lower().replace("-", " ")
    out = [re.sub(r"[^\w']", "", w) for w in text.split()]
    return [SPELLED.get(w, w) for w in out if w]


def wer(reference, hypothesis):
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)] / max(len(ref), 1)


def client(**kwargs):
    return OpenAI(base_url=BASE_URL, api_key=KEY, timeout=120, **kwargs)


def audio(case):
    return open(CASES[case]["file"], "rb")


class Transcriptions(unittest.TestCase):
    def test_json_is_the_text(self):
        with audio("short") as f:
            result = client().audio.transcriptions.create(model="whisper-1", file=f)
        self.assertIsInstance(result, openai.types.audio.Transcription)
        self.assertLessEqual(wer(CASES["short"]["text"], result.text), 0.15, result.text)

    def test_text_srt_and_vtt_are_plain_bodies(self):
        c = client()
        with audio("short") as f:
            text = c.audio.transcriptions.create(model="whisper-1", file=f, response_format="text")
        self.assertIsInstance(text, str)
        self.assertLessEqual(wer(CASES["short"]["text"], text), 0.15, text)
        with audio("short") as f:
            srt = c.audio.transcriptions.create(model="whisper-1", file=f, response_format="srt")
        self.assertRegex(srt, r"^1\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n\S")
        with audio("short") as f:
            vtt = c.audio.transcriptions.create(model="base", file=f, response_format="vtt")
        self.assertTrue(vtt.startswith("WEBVTT\n\n"), vtt)
        self.assertRegex(vtt, r"\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}\n")
        cue_text = " ".join(re.sub(r"<v [^>]*>", "", l) for l in vtt.splitlines()[2:] if l and "-->" not in l)
        self.assertLessEqual(wer(CASES["short"]["text"], cue_text), 0.15, vtt)

    def test_verbose_json_has_segments_words_and_speakers(self):
        with audio("long") as f:
            result = client().audio.transcriptions.create(
                model="whisper-1",
                file=f,
                response_format="verbose_json",
                timestamp_granularities=["word", "segment"],
            )
        self.assertEqual(result.language, "english")
        self.assertGreater(result.duration, 20)
        self.assertLessEqual(wer(CASES["long"]["text"], result.text), 0.15, result.text)
        self.assertGreaterEqual(len(result.segments), 3)
        previous_end = 0.0
        for i, segment in enumerate(result.segments):
            self.assertEqual(segment.id, i)
            self.assertLessEqual(previous_end, segment.start + 1e-6)
            self.assertLess(segment.start, segment.end)
            self.assertTrue(segment.tokens, segment)
            self.assertLessEqual(segment.avg_logprob, 0)
            self.assertTrue(0 <= segment.no_speech_prob <= 1)
            previous_end = segment.end
        # The extension OpenAI clients ignore: the reader, then Asterisk's prompt voice.
        speakers = [s.model_extra.get("speaker") for s in result.segments]
        self.assertEqual(speakers[1], 1, speakers)
        self.assertGreaterEqual(len(set(speakers) - {None}), 2, speakers)
        self.assertEqual(" ".join(w.word for w in result.words), result.text)
        starts = [w.start for w in result.words]
        self.assertEqual(starts, sorted(starts))
        self.assertTrue(all(w.start <= w.end <= result.duration + 0.05 for w in result.words))

    def test_word_granularity_alone_leaves_segments_out(self):
        with audio("short") as f:
            result = client().audio.transcriptions.create(
                model="whisper-1", file=f, response_format="verbose_json", timestamp_granularities=["word"]
            )
        self.assertIsNone(result.segments)
        self.assertGreater(len(result.words), 10)

    def test_stream_sends_deltas_then_the_whole_text(self):
        with audio("long") as f:
            events = list(client().audio.transcriptions.create(model="whisper-1", file=f, stream=True))
        kinds = [e.type for e in events]
        self.assertGreaterEqual(kinds.count("transcript.text.delta"), 2, kinds)
        self.assertEqual(kinds[-1], "transcript.text.done")
        self.assertEqual(kinds.count("transcript.text.done"), 1)
        deltas = "".join(e.delta for e in events if e.type == "transcript.text.delta")
        self.assertEqual(deltas, events[-1].text)
        with audio("long") as f:
            whole = client().audio.transcriptions.create(model="whisper-1", file=f)
        self.assertEqual(events[-1].text, whole.text)

    def test_prompt_and_language_are_accepted(self):
        with audio("short") as f:
            result = client().audio.transcriptions.create(
                model="whisper-1", file=f, language="en", prompt="Dashwood, Norland.", temperature=0
            )
        self.assertLessEqual(wer(CASES["short"]["text"], result.text), 0.15, result.text)


class Translations(unittest.TestCase):
    def test_french_becomes_english(self):
        with audio("french") as f:
            result = client().audio.translations.create(model="whisper-1", file=f)
        text = set(words(result.text))
        self.assertTrue({"letter", "press"} & text, result.text)
        self.assertFalse({"lettre", "appuyez", "bienvenue"} & text, result.text)
        with audio("french") as f:
            verbose = client().audio.translations.create(model="whisper-1", file=f, response_format="verbose_json")
        self.assertEqual(verbose.task, "translate")
        self.assertEqual(verbose.language, "english")


class Errors(unittest.TestCase):
    def test_a_garbage_file_is_a_bad_request(self):
        with self.assertRaises(openai.BadRequestError) as caught:
            client().audio.transcriptions.create(model="whisper-1", file=("notes.wav", b"this is not audio " * 200))
        self.assertEqual(caught.exception.status_code, 400)
        self.assertEqual(caught.exception.param, "file")
        # Named .wav, so declared audio/wav: not a WAV it can read.
        self.assertIn(caught.exception.code, {"not_audio", "undecodable_audio"})

    def test_an_unknown_response_format_is_a_bad_request(self):
        with audio("short") as f, self.assertRaises(openai.BadRequestError) as caught:
            client().audio.transcriptions.create(model="whisper-1", file=f, response_format="mp3")
        self.assertEqual(caught.exception.param, "response_format")

    def test_a_wrong_or_missing_key_is_an_authentication_error(self):
        for key in ["wrong-key", ""]:
            c = OpenAI(base_url=BASE_URL, api_key=key or "unused", max_retries=0)
            if not key:
                c = c.with_options(default_headers={"Authorization": ""})
            with audio("short") as f, self.assertRaises(openai.AuthenticationError):
                c.audio.transcriptions.create(model="whisper-1", file=f)
        with self.assertRaises(openai.AuthenticationError):
            OpenAI(base_url=BASE_URL, api_key="wrong-key").models.list()

    def test_models_list_the_loaded_model(self):
        ids = [m.id for m in client().models.list()]
        self.assertIn("whisper-1", ids)
        self.assertEqual(client().models.retrieve("whisper-1").id, "whisper-1")
        with self.assertRaises(openai.NotFoundError):
            client().models.retrieve("gpt-9")

    def test_an_overloaded_instance_answers_429_and_the_sdk_retries(self):
        # One worker, no queue: of three requests at once, some are refused with 429 and
        # Retry-After: 1; the SDK waits as told and sends them again. The SDK's own httpx
        # client, with a hook that sees every response, shows the refusals.
        seen = []
        http = openai.DefaultHttpxClient(event_hooks={"response": [lambda r: seen.append((r.status_code, r.headers.get("retry-after")))]})
        busy = OpenAI(base_url=BUSY_URL, api_key=KEY, max_retries=60, timeout=120, http_client=http)

        def one(_):
            with audio("short") as f:
                return busy.audio.transcriptions.create(model="whisper-1", file=f).text

        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            texts = list(pool.map(one, range(3)))
        for text in texts:
            self.assertLessEqual(wer(CASES["short"]["text"], text), 0.15, text)
        self.assertIn((429, "1"), seen, seen)
        self.assertGreaterEqual([s for s, _ in seen].count(200), 3, seen)

        def without_retries(_):
            with audio("short") as f:
                try:
                    busy.with_options(max_retries=0).audio.transcriptions.create(model="whisper-1", file=f)
                except openai.RateLimitError as e:
                    return e
            return None

        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            refused = [e for e in pool.map(without_retries, range(3)) if e]
        self.assertTrue(refused, "three requests at once on one worker: none was refused")
        self.assertEqual(refused[0].code, "overloaded")


if __name__ == "__main__":
    unittest.main(verbosity=2)
