"""Tests of shipping.py's pure functions: python3 -m unittest (in this
directory). The expected identifiers come from the Go services' idFor and
mix (examples/services/services.go), run with go run."""

import json
import unittest
from datetime import datetime, timezone

import shipping


class IDs(unittest.TestCase):
    def test_mix_matches_go(self):
        self.assertEqual(shipping.mix(0), 0)
        self.assertEqual(shipping.mix(1), 6238072747940578789)
        self.assertEqual(shipping.mix(0xCBF29CE484222325), 17665956581633026203)

    def test_fnv1a64(self):
        self.assertEqual(shipping.fnv1a64(b""), 0xCBF29CE484222325)
        self.assertEqual(shipping.fnv1a64(b"a"), 0xAF63DC4C8601EC8C)

    def test_tracking_numbers_match_go(self):
        # strings.ToUpper(idFor("trk", key)) printed by a go run of the Go
        # functions, for an empty key, a real one, a short one and UTF-8.
        for key, want in [
            ("", "TRK3Q7U2YO2E2K63"),
            ("tsk_06h2h3x6h29cwz7t1p87fnqff8/ship", "TRK31YFQS9VW3GSC"),
            ("k", "TRK249ST37OURQSG"),
            ("ördér/ß", "TRK2N6RW9N50AY4S"),
        ]:
            with self.subTest(key=key):
                self.assertEqual(shipping.id_for("trk", key).upper(), want)

    def test_base36(self):
        self.assertEqual(shipping.base36(0), "0")
        self.assertEqual(shipping.base36(35), "z")
        self.assertEqual(shipping.base36(36), "10")
        self.assertEqual(shipping.base36((1 << 64) - 1), "3w5e11264sgsf")


class Delay(unittest.TestCase):
    def test_durations(self):
        for text, want in [("0", 0), ("20ms", 0.02), ("1.5s", 1.5), ("1h30m", 5400), ("250us", 0.00025), ("1µs", 1e-6), ("2m0.5s", 120.5)]:
            with self.subTest(text=text):
                self.assertAlmostEqual(shipping.parse_duration(text), want)
        for bad in ["", "20", "ms", "1d", "1.5.5s", "-"]:
            with self.subTest(bad=bad), self.assertRaises(ValueError):
                shipping.parse_duration(bad)

    def test_ranges(self):
        self.assertEqual(shipping.parse_delay("20ms-80ms"), (0.02, 0.08))
        self.assertEqual(shipping.parse_delay("50ms"), (0.05, 0.05))
        self.assertEqual(shipping.parse_delay(" 1s - 2s "), (1.0, 2.0))
        for bad in ["80ms-20ms", "x-1s", "1s-", "-1s"]:
            with self.subTest(bad=bad), self.assertRaises(ValueError):
                shipping.parse_delay(bad)

    def test_flag_errors_name_the_flag(self):
        import contextlib
        import io
        err = io.StringIO()
        with contextlib.redirect_stderr(err), self.assertRaises(SystemExit):
            shipping.parse_args(["--delay=80ms-20ms"])
        self.assertIn("--delay", err.getvalue())
        args = shipping.parse_args(["--delay", "5ms", "--listen=127.0.0.1:9", "--drain", "2s"])
        self.assertEqual((args.delay, args.listen, args.drain), ((0.005, 0.005), ("127.0.0.1", 9), 2.0))


class Ship(unittest.TestCase):
    NOW = datetime(2026, 11, 29, 18, 30, 0, 120000, tzinfo=timezone.utc)

    def test_carriers(self):
        for address, service, want in [
            ({"country": "GB"}, None, ("Royal Mail", 2)),
            ({"country": "us"}, "standard", ("UPS", 2)),
            ({"country": "FR"}, None, ("La Poste", 2)),
            ({"country": "DE"}, None, ("DHL", 2)),
            ({"country": "NL"}, "express", ("PostNL", 1)),
            ({"country": "JP"}, None, ("DHL", 5)),
            (None, None, ("DHL", 5)),
            (None, "express", ("DHL", 1)),
        ]:
            with self.subTest(address=address, service=service):
                self.assertEqual(shipping.choose_carrier(address, service), want)

    def test_result(self):
        got = shipping.ship({"order_id": "ord_1", "reservation": "r", "charge": "c", "address": {"country": "GB"}}, "k", self.NOW)
        self.assertEqual(got, {"tracking_number": "TRK249ST37OURQSG", "carrier": "Royal Mail", "eta_days": 2, "booked_at": "2026-11-29T18:30:00.12Z"})

    def test_needs_reservation_and_charge(self):
        for inp in [{"order_id": "o", "charge": "c"}, {"order_id": "o", "reservation": "r", "charge": ""}, [], {"reservation": 1, "charge": "c"}]:
            with self.subTest(inp=inp), self.assertRaises(shipping.Permanent) as cm:
                shipping.ship(inp, "k", self.NOW)
            self.assertEqual(cm.exception.code, "invalid_input")

    def test_times(self):
        self.assertEqual(shipping.rfc3339(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)), "2026-01-02T03:04:05Z")
        self.assertEqual(shipping.parse_time("2026-11-30T04:13:12.485814352Z"), datetime(2026, 11, 30, 4, 13, 12, 485814, tzinfo=timezone.utc))

    def test_journal_line(self):
        line = shipping.journal_line(self.NOW, "t", "ship", "shipping.book", 1, 1.5, "ok", b'{"a":1}', None, 7)
        self.assertEqual(line, '{"time":"2026-11-29T18:30:00.12Z","task_id":"t","step":"ship","capability":"shipping.book","attempt":1,"duration_ms":1.5,"outcome":"ok","result":{"a":1},"pid":7}\n')
        failed = json.loads(shipping.journal_line(self.NOW, "t", "ship", "shipping.book", 2, 3.0, "invalid_input", None, "no charge", 7))
        self.assertNotIn("result", failed)
        self.assertEqual(failed["error"], "no charge")


if __name__ == "__main__":
    unittest.main()
