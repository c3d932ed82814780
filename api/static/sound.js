// Audible alarm signals through the Web Audio API (docs/clinical-rules.md, A8): the high and
// medium pulse bursts of signals.js, repeated while an alarm of that priority sounds. A browser
// plays nothing before a gesture: the sign-in click unlocks it (`unlock`), and `state` says
// whether sound is on, so the page can show a mark while it is not.

import { FALL, PULSES, RISE, burst, burstPeriodS, known } from "./signals.js";

const LEAD_S = 0.05; // a burst is scheduled this far ahead, so that its first pulse is whole
// The fundamental and four harmonics within 15 dB of it (IEC 60601-1-8 asks for at least 4
// harmonics in 300 to 4000 Hz), so the signal is heard and located through a room's noise.
const HARMONICS = [1, 0.8, 0.6, 0.5, 0.4];
const LEVEL = 0.3;

export class Sounder {
  // `makeContext`: () => a new AudioContext (null when the browser has none).
  constructor(makeContext) {
    this.makeContext = makeContext;
    this.context = null;
    this.unavailable = false;
    this.playing = null; // the priority sounding now
    this.nextAt = 0; // the audio clock's time of the next burst
    this.voices = []; // {osc, gain, end}: pulses scheduled and not yet over
  }

  // From a user's gesture (the sign-in click, "Allow sound"): sound may play from now on.
  unlock() {
    if (!this.context && !this.unavailable) {
      try {
        this.context = this.makeContext();
      } catch {
        this.context = null;
      }
      if (!this.context) {
        this.unavailable = true;
        return;
      }
      this.master = this.context.createGain();
      this.master.gain.value = LEVEL;
      this.master.connect(this.context.destination);
      const imag = new Float32Array([0, ...HARMONICS]);
      this.wave = this.context.createPeriodicWave(new Float32Array(imag.length), imag);
    }
    if (this.context && this.context.state !== "running") this.context.resume().catch(() => {});
  }

  // "on", "locked" (the browser has not allowed sound yet) or "unavailable" (no Web Audio).
  get state() {
    if (this.unavailable) return "unavailable";
    return this.context?.state === "running" ? "on" : "locked";
  }

  // On every tick: the priority to sound now (null: none). A change of priority starts its
  // burst at once; the same priority repeats its burst at its interval.
  update(priority) {
    const ctx = this.context;
    if (!ctx || ctx.state !== "running" || !priority || !PULSES[known(priority)]) {
      this.hush();
      return;
    }
    const now = ctx.currentTime;
    this.voices = this.voices.filter((voice) => voice.end > now);
    if (priority !== this.playing) {
      this.hush();
      this.playing = priority;
    }
    if (now >= this.nextAt - LEAD_S) {
      const start = Math.max(this.nextAt, now + LEAD_S);
      this.play(priority, start);
      this.nextAt = start + burstPeriodS(priority);
    }
  }

  play(priority, start) {
    const ctx = this.context;
    const tone = PULSES[known(priority)].toneHz;
    for (const pulse of burst(priority)) {
      const at = start + pulse.at;
      const end = at + pulse.duration;
      const osc = ctx.createOscillator();
      osc.setPeriodicWave(this.wave);
      osc.frequency.value = tone;
      const gain = ctx.createGain();
      gain.gain.setValueAtTime(0, at);
      gain.gain.linearRampToValueAtTime(1, at + RISE * pulse.duration);
      gain.gain.setValueAtTime(1, end - FALL * pulse.duration);
      gain.gain.linearRampToValueAtTime(0, end);
      osc.connect(gain);
      gain.connect(this.master);
      osc.start(at);
      osc.stop(end);
      this.voices.push({ osc, gain, end });
    }
  }

  // Every pulse not yet over is stopped now (an acknowledgement, a silence, no alarm left).
  hush() {
    const now = this.context ? this.context.currentTime : 0;
    for (const voice of this.voices) {
      if (voice.end <= now) continue;
      try {
        voice.gain.gain.cancelScheduledValues(now);
        voice.gain.gain.setValueAtTime(0, now);
        voice.osc.stop(now);
        voice.gain.disconnect();
      } catch {
        // already stopped: nothing left to hush
      }
    }
    this.voices = [];
    this.playing = null;
    this.nextAt = 0;
  }
}
