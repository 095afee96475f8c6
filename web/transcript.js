// The transcript as the page holds it: final segments (never revised) and the current
// partial text, with exports to plain text, WebVTT and SRT. No DOM here.

export class Transcript {
  constructor() {
    /** @type {{start: number, end: number, text: string, speaker: number|null}[]} */
    this.segments = [];
    /** @type {{start: number, end: number, text: string}|null} */
    this.partial = null;
    /** Speaker number -> name the user gave. */
    this.names = new Map();
  }

  /** Takes one `/api/transcribe` reply; returns the final segments it added. */
  add(reply) {
    const added = (reply.results || []).map((s) => ({
      start: s.start, end: s.end, text: s.text, speaker: s.speaker ?? null,
    }));
    this.segments.push(...added);
    this.partial = reply.partial || null;
    return added;
  }

  /**
   * Takes the final speaker labels of the last stream (one per segment of it, in order, the
   * transcript's last segments): names given to the live numbers are dropped, as the numbers
   * may change. Returns false (nothing changed) when there are no labels or too many.
   */
  relabel(speakers) {
    if (!speakers || speakers.length > this.segments.length) return false;
    const first = this.segments.length - speakers.length;
    speakers.forEach((speaker, i) => { this.segments[first + i].speaker = speaker; });
    this.names.clear();
    return true;
  }

  speakerName(n) {
    if (n === null || n === undefined) return '';
    return this.names.get(n) || `Speaker ${n}`;
  }

  /** The speakers heard so far, in order of appearance. */
  speakers() {
    return [...new Set(this.segments.map((s) => s.speaker).filter((s) => s !== null))];
  }

  finalText() {
    return this.segments.map((s) => s.text).join(' ').replace(/\s+/g, ' ').trim();
  }

  toText() {
    return this.segments
      .map((s) => `[${clock(s.start)}] ${s.speaker !== null ? `${this.speakerName(s.speaker)}: ` : ''}${s.text}`)
      .join('\n') + '\n';
  }

  toVtt() {
    const cues = this.segments.map((s, i) => {
      const voice = s.speaker !== null ? `<v ${escapeCue(this.speakerName(s.speaker))}>` : '';
      return `${i + 1}\n${stamp(s.start, '.')} --> ${stamp(cueEnd(s), '.')}\n${voice}${escapeCue(s.text)}\n`;
    });
    return ['WEBVTT', '', ...cues].join('\n');
  }

  toSrt() {
    return this.segments.map((s, i) => {
      const who = s.speaker !== null ? `${this.speakerName(s.speaker)}: ` : '';
      return `${i + 1}\n${stamp(s.start, ',')} --> ${stamp(cueEnd(s), ',')}\n${who}${s.text}\n`;
    }).join('\n');
  }
}

/** A cue lasts at least a moment (a one-word segment may have start == end). */
function cueEnd(s) {
  return Math.max(s.end, s.start + 0.2);
}

/** `hh:mm:ss.mmm` (WebVTT) or `hh:mm:ss,mmm` (SRT). */
export function stamp(seconds, separator) {
  const ms = Math.max(0, Math.round(seconds * 1000));
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor(ms / 60_000) % 60;
  const s = Math.floor(ms / 1000) % 60;
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  return `${pad(h)}:${pad(m)}:${pad(s)}${separator}${pad(ms % 1000, 3)}`;
}

/** `m:ss` for display. */
export function clock(seconds) {
  const total = Math.max(0, Math.floor(seconds));
  return `${Math.floor(total / 60)}:${String(total % 60).padStart(2, '0')}`;
}

function escapeCue(text) {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/-->/g, '--&gt;');
}
