"""Streaming fall detection for one worn accelerometer, 20 to 200 Hz: one algorithm, one source.

This very file also runs on the MicroPython pendant, so it keeps to the subset both share: no
imports but `math`, no dataclasses, enums or f-strings, no `typing` (annotations are plain
built-in types, which MicroPython parses and ignores), no formatting of numbers, plain lists as
ring buffers sized once from the sample rate, and a fixed amount of work per sample.

The algorithm follows the physics of a fall rather than a trained model:

1. Impact: |a| smoothed over 100 ms rises above `IMPACT_G`. A body landing on the floor
   decelerates for tens of milliseconds; a knock of the sensor or a hip rolling onto a mattress is
   shorter and flattens out, and the smoothing makes 200 Hz peaks comparable to what a 20 Hz
   sensor reports.
2. Posture before: 1 s means of the acceleration are gravity in the device frame (over a second
   the body's own accelerations average out, even while walking). Those ending 0.5 to 3 s before
   the impact, whose length is close to 1 g, are kept as "how the body was oriented before".
3. Afterwards: within `WATCH_S` of the last impact, a full second without impact in which the body
   is still (standard deviation of |a| below `STILL_G`), with gravity turned by at least
   `LYING_DEG` from the posture before (upright or sitting -> lying), or by `TURNED_DEG` after a
   hard impact of `HARD_IMPACT_G` or more (e.g. ending up sitting on the floor).

Each threshold sits midway between the nearest daily activity and the nearest fall of SisFall
(waist, 200 Hz, also resampled to 100/50/25/20 Hz) and UMAFall (chest, 20 Hz), measured with
`aal-hub eval falls`: rolling over in bed and lying down quickly (SisFall D12-D14) turn the body
as much as a fall but stay below 1.5 g once smoothed, the softest falls onto the mattress from a
chair reach 1.7-1.8 g; sitting quickly into a low chair tilts a waist sensor by up to 68 degrees,
falls that end lying turn it by 77 or more; activities with 2.5 g or more turn it by 23 or less,
falls ending half upright (sitting on the floor) turn it by 47 with 3.1 g or more. Other people
will land elsewhere: these margins are what the data allow, not guarantees.

After a fall is reported the core stays silent for `REFRACTORY_S`: one fall, one report.
"""

import math

NO_FALL = 0
FALL_LYING = 1  # impact, then still and lying: body turned >= LYING_DEG from before
FALL_HARD = 2  # hard impact, then still with the body turned >= TURNED_DEG from before

_MAX_G = 64.0  # beyond any real sensor's range; larger values are clipped


class FallCore:
    """Feed `update(x, y, z)` (g) at `rate_hz`; it returns NO_FALL or a fall code, once per fall.

    After a non-zero result, `impact_g` (smoothed peak), `angle_deg` (turn of the body) and
    `since_impact_s` (seconds from the impact to the sample that confirmed the fall) describe it.
    """

    # Thresholds (class attributes: the pendant's firmware and experiments may override them).
    IMPACT_G = 1.6
    HARD_IMPACT_G = 2.7
    LYING_DEG = 74.0
    TURNED_DEG = 35.0
    STILL_G = 0.2
    GRAVITY_TOLERANCE_G = 0.3
    SMOOTH_S = 0.1
    BLOCK_S = 0.1
    POSTURE_S = 1.0
    BEFORE_FROM_S = 3.0
    BEFORE_TO_S = 0.5
    BEFORE_STEP_S = 0.2
    WATCH_S = 4.0
    RESTART_S = 3.0
    REFRACTORY_S = 30.0

    def __init__(self, rate_hz: float) -> None:
        rate = float(rate_hz)
        if rate - rate != 0.0 or rate < 5.0 or rate > 2000.0:
            raise ValueError("rate_hz must be between 5 and 2000")
        self.rate_hz = rate
        self._smooth_n = max(1, int(self.SMOOTH_S * rate + 0.5))
        self._block_n = max(1, int(self.BLOCK_S * rate + 0.5))
        block_s = self._block_n / rate
        self._posture_n = max(2, int(self.POSTURE_S / block_s + 0.5))
        self._before_to = max(1, int(self.BEFORE_TO_S / block_s + 0.5))
        self._before_from = max(self._before_to, int(self.BEFORE_FROM_S / block_s + 0.5))
        self._before_step = max(1, int(self.BEFORE_STEP_S / block_s + 0.5))
        self._restart_n = max(1, int(self.RESTART_S / block_s + 0.5))
        self._watch_n = max(self._posture_n + 1, int(self.WATCH_S / block_s + 0.5))
        self._refractory_n = int(self.REFRACTORY_S / block_s + 0.5)
        self._history_n = self._before_from + 1
        self._before_max = (self._before_from - self._before_to) // self._before_step + 1
        self._cos_lying = math.cos(math.radians(self.LYING_DEG))
        self._cos_turned = math.cos(math.radians(self.TURNED_DEG))
        self._g_low = 1.0 - self.GRAVITY_TOLERANCE_G
        self._g_high = 1.0 + self.GRAVITY_TOLERANCE_G
        self._smooth = [1.0] * self._smooth_n
        # Per block: sums of x, y, z, |a| and |a|^2 (posture window), newest at _b_pos.
        self._bx = [0.0] * self._posture_n
        self._by = [0.0] * self._posture_n
        self._bz = [0.0] * self._posture_n
        self._bm = [0.0] * self._posture_n
        self._bm2 = [0.0] * self._posture_n
        # Per block: the posture (1 s mean of x, y, z) ending with that block; 0 length = unknown.
        self._hx = [0.0] * self._history_n
        self._hy = [0.0] * self._history_n
        self._hz = [0.0] * self._history_n
        # Unit vectors of the postures before the current impact.
        self._ux = [0.0] * self._before_max
        self._uy = [0.0] * self._before_max
        self._uz = [0.0] * self._before_max
        self.impact_g = 0.0
        self.angle_deg = 0.0
        self.since_impact_s = 0.0
        self.reset()

    def reset(self) -> None:
        """Forget everything (e.g. after a gap in the data or when the device is put on)."""
        for i in range(self._smooth_n):
            self._smooth[i] = 1.0
        self._s_pos = 0
        self._s_sum = float(self._smooth_n)
        for i in range(self._posture_n):
            self._bx[i] = 0.0
            self._by[i] = 0.0
            self._bz[i] = 0.0
            self._bm[i] = 0.0
            self._bm2[i] = 0.0
        self._b_pos = 0
        for i in range(self._history_n):
            self._hx[i] = 0.0
            self._hy[i] = 0.0
            self._hz[i] = 0.0
        self._h_pos = 0
        self._blocks = 0  # complete blocks seen since reset
        self._in_block = 0
        self._cx = 0.0
        self._cy = 0.0
        self._cz = 0.0
        self._cm = 0.0
        self._cm2 = 0.0
        self._c_peak = 0.0
        self._n_before = 0
        self._watching = False
        self._peak = 0.0
        self._quiet = 0  # complete blocks since the last impact
        self._impact_samples = 0  # samples since the peak of the current event
        self._watch_left = 0
        self._event_blocks = 0
        self._refractory_left = 0

    def update(self, x: float, y: float, z: float) -> int:
        """Take one sample in g; return NO_FALL, FALL_LYING or FALL_HARD."""
        x = _clean(x)
        y = _clean(y)
        z = _clean(z)
        m = math.sqrt(x * x + y * y + z * z)
        pos = self._s_pos
        self._s_sum += m - self._smooth[pos]
        self._smooth[pos] = m
        pos += 1
        if pos == self._smooth_n:
            pos = 0
            total = 0.0  # re-add now and then so float rounding cannot drift
            for v in self._smooth:
                total += v
            self._s_sum = total
        self._s_pos = pos
        smoothed = self._s_sum / self._smooth_n
        self._impact_samples += 1
        self._c_peak = max(self._c_peak, smoothed)
        if smoothed >= self.IMPACT_G and self._refractory_left == 0:
            if not self._watching or self._event_blocks >= self._restart_n:
                self._start_event()
            if smoothed >= self._peak:
                self._peak = smoothed
                self._impact_samples = 0
        self._cx += x
        self._cy += y
        self._cz += z
        self._cm += m
        self._cm2 += m * m
        self._in_block += 1
        if self._in_block < self._block_n:
            return NO_FALL
        return self._end_block()

    def _start_event(self) -> None:
        self._watching = True
        self._peak = 0.0
        self._event_blocks = 0
        n = 0
        back = self._before_to
        while back <= self._before_from and back < self._blocks:
            i = (self._h_pos - back) % self._history_n
            gx = self._hx[i]
            gy = self._hy[i]
            gz = self._hz[i]
            g = math.sqrt(gx * gx + gy * gy + gz * gz)
            if self._g_low <= g <= self._g_high:
                self._ux[n] = gx / g
                self._uy[n] = gy / g
                self._uz[n] = gz / g
                n += 1
            back += self._before_step
        self._n_before = n

    def _end_block(self) -> int:
        """Close a block: roll the posture window, then judge a pending impact."""
        p = self._b_pos + 1
        if p == self._posture_n:
            p = 0
        self._b_pos = p
        self._bx[p] = self._cx
        self._by[p] = self._cy
        self._bz[p] = self._cz
        self._bm[p] = self._cm
        self._bm2[p] = self._cm2
        impact = self._c_peak >= self.IMPACT_G
        self._cx = self._cy = self._cz = self._cm = self._cm2 = 0.0
        self._c_peak = 0.0
        self._in_block = 0
        self._blocks += 1
        sx = sy = sz = sm = sm2 = 0.0
        for i in range(self._posture_n):
            sx += self._bx[i]
            sy += self._by[i]
            sz += self._bz[i]
            sm += self._bm[i]
            sm2 += self._bm2[i]
        n = self._posture_n * self._block_n
        gx = sx / n
        gy = sy / n
        gz = sz / n
        h = self._h_pos + 1
        if h == self._history_n:
            h = 0
        self._h_pos = h
        full = self._blocks >= self._posture_n
        self._hx[h] = gx if full else 0.0
        self._hy[h] = gy if full else 0.0
        self._hz[h] = gz if full else 0.0
        if self._refractory_left > 0:
            self._refractory_left -= 1
        if not self._watching:
            return NO_FALL
        self._event_blocks += 1
        if impact:
            self._quiet = 0
            self._watch_left = self._watch_n
            return NO_FALL
        self._quiet += 1
        self._watch_left -= 1
        if self._watch_left <= 0:
            self._watching = False
            return NO_FALL
        if self._quiet < self._posture_n or self._n_before == 0:
            return NO_FALL
        mean = sm / n
        var = sm2 / n - mean * mean
        if var > self.STILL_G * self.STILL_G:
            return NO_FALL
        g = math.sqrt(gx * gx + gy * gy + gz * gz)
        if not self._g_low <= g <= self._g_high:
            return NO_FALL
        lowest = 1.0  # cosine of the largest turn from any posture before
        for i in range(self._n_before):
            c = (self._ux[i] * gx + self._uy[i] * gy + self._uz[i] * gz) / g
            lowest = min(lowest, c)
        code = self._judge(lowest)
        if code == NO_FALL:
            return NO_FALL
        self.impact_g = self._peak
        self.angle_deg = math.degrees(math.acos(max(-1.0, min(1.0, lowest))))
        self.since_impact_s = self._impact_samples / self.rate_hz
        self._watching = False
        self._refractory_left = self._refractory_n
        return code

    def _judge(self, lowest_cos: float) -> int:
        """The verdict once the body is still after an impact, from the cosine of its turn."""
        if lowest_cos <= self._cos_lying:
            return FALL_LYING
        if lowest_cos <= self._cos_turned and self._peak >= self.HARD_IMPACT_G:
            return FALL_HARD
        return NO_FALL


def _clean(v: float) -> float:
    """A finite value within the sensor range; NaN and infinities (bad frames) count as 0 g."""
    v = float(v)
    if v - v != 0.0:
        return 0.0
    if v > _MAX_G:
        return _MAX_G
    if v < -_MAX_G:
        return -_MAX_G
    return v
