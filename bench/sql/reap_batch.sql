SELECT lifecycle.reap_expired(1000);
