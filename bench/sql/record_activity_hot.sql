\set u random(1, 1000)
SELECT lifecycle.record_activity(:u, 'c1', '{sync,relay}');
