// AudioWorklet processor: hands each block of microphone samples (first channel) to the page.
class PcmCapture extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0][0];
    if (channel) this.port.postMessage(channel.slice());
    return true;
  }
}

registerProcessor("pcm-capture", PcmCapture);
