\set u random(1, 1000)
SELECT lifecycle.record_activity(:u::text, 'c1', '{sync}');
