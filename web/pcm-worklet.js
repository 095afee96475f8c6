// AudioWorklet: the microphone as 16 kHz mono samples, posted to the page in blocks of
// ~100 ms. Resamples (linear) when the context does not run at 16 kHz.

const RATE = 16000;
const BLOCK = 1600;

class PcmCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / RATE;
    this.position = 0; // next output sample, in input samples from `this.previous`
    this.previous = 0;
    this.block = new Float32Array(BLOCK);
    this.filled = 0;
    this.port.onmessage = (e) => {
      if (e.data === 'flush') {
        this.port.postMessage(this.block.slice(0, this.filled));
        this.filled = 0;
      }
    };
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    if (this.step === 1) {
      for (let i = 0; i < channel.length; i += 1) this.emit(channel[i]);
      return true;
    }
    // Linear interpolation between the last sample of the previous quantum and this one.
    while (this.position < channel.length) {
      const i = Math.floor(this.position);
      const t = this.position - i;
      const a = i === 0 ? this.previous : channel[i - 1];
      const b = channel[i];
      this.emit(a + (b - a) * t);
      this.position += this.step;
    }
    this.position -= channel.length;
    this.previous = channel[channel.length - 1];
    return true;
  }

  emit(sample) {
    this.block[this.filled] = sample;
    this.filled += 1;
    if (this.filled === BLOCK) {
      this.port.postMessage(this.block);
      this.block = new Float32Array(BLOCK);
      this.filled = 0;
    }
  }
}

registerProcessor('pcm-capture', PcmCapture);
